//! Fault tests on the real binary: a downstream that fails every way a real one does and
//! then recovers, a full disk, and a store that turns read-only.
//!
//! * The downstream answers 503, then hangs past the handler's timeout, then refuses
//!   connections, then recovers: every acknowledged event is delivered, none dead.
//! * Disk full is real ENOSPC: the store lives on a 4 MiB tmpfs that the test fills. This
//!   needs `mount` (root, CAP_SYS_ADMIN); where it is not allowed the test says so on
//!   stderr and passes without checking anything.
//! * Read-only is `chattr +i` on the database and its WAL while the server runs (writes
//!   through the open descriptors then fail with EPERM). This needs root and a file system
//!   with the immutable flag (ext4, xfs, btrfs; not tmpfs or overlayfs); elsewhere the
//!   test says so and passes without checking anything.
//!
//! In both store cases the service must answer 503 (never 200) and `/readyz` 503 while it
//! cannot write, 200 again once it can, with `PRAGMA integrity_check` ok and every event
//! acknowledged before, during or after the fault stored and delivered.

#[allow(dead_code)]
#[path = "support/process.rs"]
mod process;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use process::*;

fn attempts_made(dir: &Path) -> i64 {
    open_db(dir).query_row("SELECT coalesce(sum(attempts), 0) FROM deliveries", [], |r| r.get(0)).unwrap()
}

async fn post_all(client: &reqwest::Client, server: &Server, sids: &[String]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for sid in sids {
        statuses.push(post(client, &server.url(), sid).await.unwrap());
    }
    statuses
}

fn sids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("RE-{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_failing_every_way_then_recovering_gets_everything_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let downstream = Downstream::start().await;
    downstream.set(Mode::Error);
    let config = write_config(dir.path(), &http_handler(&downstream.url, "300ms"));
    let server = Server::start(&config);
    let client = reqwest::Client::new();
    let mut all = Vec::new();

    // 5xx.
    let batch = sids("5xx", 10);
    assert!(post_all(&client, &server, &batch).await.iter().all(|s| *s == 200));
    all.extend(batch);
    eventually("503s answered", Duration::from_secs(10), || downstream.seen(Mode::Error) >= 20).await;

    // Hanging past the handler's 300 ms timeout.
    downstream.set(Mode::Hang);
    let batch = sids("hang", 10);
    assert!(post_all(&client, &server, &batch).await.iter().all(|s| *s == 200));
    all.extend(batch);
    eventually("attempts hung", Duration::from_secs(10), || downstream.seen(Mode::Hang) >= 16).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // at least one timeout fires

    // Connections refused.
    downstream.refuse();
    let before = attempts_made(dir.path());
    let batch = sids("refused", 10);
    assert!(post_all(&client, &server, &batch).await.iter().all(|s| *s == 200));
    all.extend(batch);
    eventually("attempts refused", Duration::from_secs(10), || attempts_made(dir.path()) >= before + 30).await;

    // Recovery.
    downstream.set(Mode::Ok);
    downstream.listen().await;
    let batch = sids("after", 10);
    assert!(post_all(&client, &server, &batch).await.iter().all(|s| *s == 200));
    all.extend(batch);
    eventually("everything delivered", Duration::from_secs(30), || all.iter().all(|s| downstream.count(s) >= 1)).await;
    eventually("no delivery pending or dead", Duration::from_secs(10), || {
        delivery_states(dir.path()).keys().all(|s| s == "delivered")
    })
    .await;
    assert_eq!(delivery_states(dir.path())["delivered"], 40);
    assert!(downstream.seen(Mode::Hang) > 0 && downstream.seen(Mode::Error) > 0);
}

/// What a fault test needs from the store: the server on it, its directory, the
/// acknowledged SIDs, and a downstream counting deliveries.
struct Faulty {
    server: Server,
    store_dir: PathBuf,
    config: PathBuf,
    downstream: Downstream,
    client: reqwest::Client,
    acked: Vec<String>,
}

impl Faulty {
    async fn start(store_dir: PathBuf, config_dir: &Path) -> Faulty {
        let downstream = Downstream::start().await;
        let config = write_config(config_dir, &http_handler(&downstream.url, "2s"));
        // The store goes in store_dir, the config stays where it was written.
        let text = std::fs::read_to_string(&config).unwrap().replace(
            &config_dir.join("recordhook.db").display().to_string(),
            &store_dir.join("recordhook.db").display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        let server = Server::start(&config);
        Faulty { server, store_dir, config, downstream, client: reqwest::Client::new(), acked: Vec::new() }
    }

    async fn send_expecting(&mut self, batch: &[String], status: u16) {
        for (sid, got) in batch.iter().zip(post_all(&self.client, &self.server, batch).await) {
            assert_eq!(got, status, "{sid}");
            if got == 200 {
                self.acked.push(sid.clone());
            }
        }
    }

    /// The fault is on: nothing is acknowledged, readiness is down, and the service
    /// stays up.
    async fn assert_refusing(&mut self, prefix: &str) -> Vec<String> {
        let refused = sids(prefix, 10);
        self.send_expecting(&refused, 503).await;
        assert_eq!(self.server.ready(&self.client).await, 503, "/readyz while the store cannot write");
        assert!(self.server.child.try_wait().unwrap().is_none(), "the server died");
        refused
    }

    /// The fault is gone: readiness comes back, the refused callbacks (as SignalWire
    /// retries them) and new ones are acknowledged, everything acknowledged is delivered,
    /// and after a stop the database is sound and holds every acknowledged event.
    async fn assert_recovers(mut self, refused: Vec<String>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.server.ready(&self.client).await != 200 {
            assert!(std::time::Instant::now() < deadline, "/readyz did not come back to 200");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.send_expecting(&refused, 200).await;
        self.send_expecting(&sids("after", 10), 200).await;
        let (acked, downstream) = (&self.acked, &self.downstream);
        eventually("everything acknowledged delivered", Duration::from_secs(30), || {
            acked.iter().all(|s| downstream.count(s) >= 1)
        })
        .await;
        self.server.kill9();
        assert_eq!(integrity(&self.store_dir), "ok");
        let stored: i64 = open_db(&self.store_dir).query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(stored as usize, self.acked.len());
        // And it starts again on that store.
        let server = Server::start(&self.config);
        assert_eq!(server.ready(&self.client).await, 200);
    }
}

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_503_and_recovers_without_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("store"), "4m") else {
        eprintln!("SKIPPED disk_full_answers_503_and_recovers_without_corruption: cannot mount a tmpfs here");
        return;
    };
    let mut t = Faulty::start(fs.0.clone(), dir.path()).await;
    t.send_expecting(&sids("before", 20), 200).await;

    // Fill the file system to the last byte.
    let filler = fs.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        if file.write_all(&chunk).and_then(|_| file.sync_all()).is_err() {
            break;
        }
    }
    let mut byte = [0u8; 1];
    while file.write_all(&byte).and_then(|_| file.sync_all()).is_ok() {
        byte[0] = byte[0].wrapping_add(1);
    }
    drop(file);

    let refused = t.assert_refusing("full").await;
    std::fs::remove_file(&filler).unwrap();
    t.assert_recovers(refused).await;
    drop(fs);
}

/// Clears the immutable flag again, whatever happens.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .args(&files)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let guard = Immutable(files);
        ok.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).stderr(std::process::Stdio::null()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_store_answers_503_and_recovers_without_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut t = Faulty::start(store.clone(), dir.path()).await;
    t.send_expecting(&sids("before", 20), 200).await;

    let files = vec![store.join("recordhook.db"), store.join("recordhook.db-wal")];
    let Some(immutable) = Immutable::set(files) else {
        eprintln!(
            "SKIPPED read_only_store_answers_503_and_recovers_without_corruption: chattr +i is not available here"
        );
        return;
    };
    let refused = t.assert_refusing("read-only").await;
    drop(immutable);
    t.assert_recovers(refused).await;
}
