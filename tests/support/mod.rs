//! Test plumbing shared by several test binaries: a fresh PostgreSQL database per test.
//!
//! The server is the one at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`: plain TCP over loopback;
//! `tests/postgres_tls.rs` covers TLS). When it cannot be reached the tests
//! that need it print `skipped: …` and pass, except under `CI=true`, where they fail: CI
//! must really run them. (Test settings never use the `RECORDHOOK_` prefix: that is the
//! binary's config override prefix.)

#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use tokio_postgres::NoTls;

/// The server's admin URL.
pub fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned())
}

/// A database created for one test, dropped (with its connections) when this is dropped.
pub struct TestDb {
    /// Its connection URL.
    pub url: String,
    /// Its name.
    pub name: String,
    admin: String,
}

/// Says why a test cannot run here: a `skipped: …` note, or under `CI=true` (where every
/// test must really run) a failure that adds `ci_hint`.
pub fn skip_unless_ci(message: &str, ci_hint: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: {ci_hint})");
    }
    eprintln!("skipped: {message}");
}

/// A connection to the server at `admin` (plain TCP), driven in the background.
pub async fn admin_client(admin: &str) -> Result<tokio_postgres::Client, String> {
    let connect = tokio_postgres::connect(admin, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

impl TestDb {
    /// Creates `rh_<random>`; `None` (after printing why) when PostgreSQL is unreachable
    /// outside CI.
    pub async fn create() -> Option<TestDb> {
        let admin = admin_url();
        let client = match admin_client(&admin).await {
            Ok(c) => c,
            Err(e) => {
                let message = format!("PostgreSQL at TEST_POSTGRES_URL ({}) is unreachable: {e}", redact(&admin));
                skip_unless_ci(&message, "PostgreSQL tests must run; start it, see .ci/run");
                return None;
            }
        };
        let name = format!("rh_{}", uuid::Uuid::new_v4().simple());
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        let mut url = url::Url::parse(&admin).expect("TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        Some(TestDb { url: url.to_string(), name, admin })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on itself: use a
        // throwaway runtime on its own thread. FORCE ends the store's open connections.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(client) = admin_client(&admin).await {
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

fn redact(url: &str) -> String {
    recordhook::config::redact_url(url)
}
