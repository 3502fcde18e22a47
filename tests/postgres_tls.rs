//! TLS to PostgreSQL against the real server at `TEST_POSTGRES_URL`: encrypted and
//! verified when the server's certificate authority is trusted, refused when it is not or
//! when the certificate does not name the host; and the service built from a config with
//! `store.ca_file` uses exactly that authority.
//!
//! The trust anchor is the server's own certificate (`SHOW ssl_cert_file`), which works for
//! the self-signed certificate Debian's PostgreSQL ships (`ssl-cert-snakeoil.pem`, issued
//! to `localhost`). A server without TLS, or whose certificate file the test cannot read,
//! makes the tests print `skipped: …` and pass, except under `CI=true`, where they fail.

mod support;

use std::path::{Path, PathBuf};

use recordhook::store::postgres::PostgresStore;
use recordhook::store::{Mode, Store};
use support::{TestDb, admin_client, admin_url, skip_unless_ci};

/// A fresh database and the server's certificate, or `None` (after saying why) where the
/// server cannot be used for these tests outside CI.
async fn setup() -> Option<(TestDb, PathBuf, tokio_postgres::Client)> {
    let db = TestDb::create().await?;
    let admin = admin_client(&admin_url()).await.expect("admin connection");
    let ssl: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let cert: String = admin.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    let cert = PathBuf::from(cert);
    if ssl != "on" || std::fs::read(&cert).is_err() {
        let message =
            format!("the PostgreSQL server has ssl = {ssl}, certificate {} (not readable here?)", cert.display());
        skip_unless_ci(&message, "the TLS tests must run");
        return None;
    }
    Some((db, cert, admin))
}

/// `db`'s URL for `host`, with `sslmode=require`.
fn tls_url(db: &TestDb, host: &str) -> String {
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_query(Some("sslmode=require"));
    url.to_string()
}

async fn open(url: &str, ca_file: Option<&Path>) -> Result<PostgresStore, String> {
    PostgresStore::open(url, 2, ca_file, Mode::Tool).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn with_the_servers_authority_trusted_every_connection_is_tls() {
    let Some((db, cert, admin)) = setup().await else { return };
    let store = open(&tls_url(&db, "localhost"), Some(&cert)).await.expect("TLS connection with the server's CA");
    store.ping().await.expect("a write commits over TLS");

    // The server's own view of our connections: all of them encrypted.
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
            &[&db.name],
        )
        .await
        .unwrap();
    let (connections, all_tls): (i64, bool) = (row.get(0), row.get(1));
    assert!(connections >= 1, "the store holds a connection");
    assert!(all_tls, "every connection of the store is TLS");
}

/// A certificate authority that signed nothing (its key was thrown away): trusting only
/// it, no server certificate verifies.
const UNRELATED_CA: &str = "\
-----BEGIN CERTIFICATE-----
MIIBujCCAV+gAwIBAgIUFm2OrM7aVMKtb+1sQenqV/evQPowCgYIKoZIzj0EAwIw
MTEvMC0GA1UEAwwmcmVjb3JkaG9vayB0ZXN0IENBIHRoYXQgc2lnbmVkIG5vdGhp
bmcwIBcNMjYxMjA0MjMxOTQzWhgPMjEyNjExMTAyMzE5NDNaMDExLzAtBgNVBAMM
JnJlY29yZGhvb2sgdGVzdCBDQSB0aGF0IHNpZ25lZCBub3RoaW5nMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE7TyzkzWLQiFgvRkbc5YR5C6aLRetFyjmBnr6lJWI
DzT0PZx/6PudvhcoiPZkDr66+A8LL6IJOQ4dyMArmeqMsqNTMFEwHQYDVR0OBBYE
FKbPgOhQLxk1XOBEoIruT6WosT2LMB8GA1UdIwQYMBaAFKbPgOhQLxk1XOBEoIru
T6WosT2LMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAJymZcSL
WGY/UG6+V6a9T3LfeYE6RcOrZYadrBykpcOuAiEA530cbVKi8NMiW/1htHug14SN
wbWh90A0B2lnQAEZDoc=
-----END CERTIFICATE-----
";

#[tokio::test]
async fn a_certificate_from_an_untrusted_authority_is_refused() {
    let Some((db, _, _admin)) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("unrelated.pem");
    std::fs::write(&ca, UNRELATED_CA).unwrap();
    let e = open(&tls_url(&db, "localhost"), Some(&ca)).await.err().expect("refused");
    // The reason reaches the message an operator sees.
    assert!(e.contains("invalid peer certificate") && e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    let Some((db, cert, _admin)) = setup().await else { return };
    // Trusted authority, but the certificate names `localhost`, not this address.
    let e = open(&tls_url(&db, "127.0.0.1"), Some(&cert)).await.err().expect("refused");
    assert!(e.contains("invalid peer certificate") && e.contains("not valid for name"), "{e}");
}

/// The service's config with the store at `url`, trusting `ca_file`.
fn service_config(url: &str, ca_file: &Path) -> recordhook::config::Config {
    recordhook::config::load_str(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[signature]
signing_keys = ["PSK_tls_test"]

[store]
type = "postgres"
url = "{url}"
ca_file = "{}"

[handlers.log]
type = "log"
"#,
        ca_file.display()
    ))
    .expect("a valid config")
}

#[tokio::test]
async fn the_service_uses_store_ca_file_for_its_connections() {
    let Some((db, cert, admin)) = setup().await else { return };
    let url = tls_url(&db, "localhost");

    // Trusting only an unrelated authority, the service does not start: the key is used
    // (the system's trust store alone might well accept this server).
    let dir = tempfile::tempdir().unwrap();
    let unrelated = dir.path().join("unrelated.pem");
    std::fs::write(&unrelated, UNRELATED_CA).unwrap();
    let e = recordhook::app::Application::build(service_config(&url, &unrelated)).await.err().expect("refused");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // Trusting the server's authority, it starts, and every connection is TLS.
    let app = recordhook::app::Application::build(service_config(&url, &cert)).await.expect("starts over TLS");
    let addr = app.local_addr();
    let serving = tokio::spawn(app.run_until_stopped(std::future::pending()));
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap().status();
    assert_eq!(ready, 200, "/readyz commits through the TLS pool");
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND NOT s.ssl",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "no connection of the service is in the clear");
    serving.abort();
}
