//! Crash test: under load, SIGKILL the server at random moments, restart it on the same
//! store, and check that every callback that got a 200 is delivered.
//!
//! Each cycle starts the real binary, drives signed callbacks at it from several
//! concurrent clients, and kills it (SIGKILL: no shutdown code runs) after a random
//! delay, mid-commit and mid-delivery. Every RecordingSid answered 200 is recorded. After
//! the last cycle a final server runs until the downstream has everything. It prints
//! `crash: cycles=… acknowledged=… lost=… redelivered=…` (`--nocapture` shows it;
//! `benches/all.sh` puts it into the report). The kill moments come from a seeded
//! generator: `CRASH_SEED=<n>` replays a run, `CRASH_CYCLES=<n>` changes the count.

#[allow(dead_code)]
#[path = "support/process.rs"]
mod process;
#[path = "support/rng.rs"]
mod rng;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::*;
// The kill moments come from a seeded generator.
use rng::SplitMix64 as Rng;

/// Concurrent clients per cycle.
const CLIENTS: usize = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_callback_is_delivered_across_repeated_sigkills() {
    let seed = env_u64("CRASH_SEED", 0x5eed_c0de);
    let cycles = env_u64("CRASH_CYCLES", 5);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let downstream = Downstream::start().await;
    let config = write_config(dir.path(), &http_handler(&downstream.url, "2s"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut unanswered = 0u64;
    for cycle in 0..cycles {
        let mut server = Server::start(&config);
        let url = server.url();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (client, url, stop, next, acked) =
                (client.clone(), url.clone(), stop.clone(), next.clone(), acked.clone());
            clients.push(tokio::spawn(async move {
                let mut failed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sid = format!("RE-crash-{}", next.fetch_add(1, Ordering::Relaxed));
                    match post(&client, &url, &sid).await {
                        Ok(200) => {
                            acked.lock().unwrap().insert(sid);
                        }
                        Ok(status) => panic!("{sid}: answered {status} while the server was up"),
                        // Killed mid-request: stored or not, it was never acknowledged.
                        Err(_) => {
                            failed += 1;
                            break;
                        }
                    }
                }
                failed
            }));
        }
        // A random moment between 200 ms and 1.5 s into the load.
        let delay = Duration::from_millis(200 + rng.next() % 1300);
        tokio::time::sleep(delay).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            unanswered += c.await.unwrap();
        }
        eprintln!(
            "cycle {cycle}: killed after {delay:?}; {} acknowledged so far, {} delivered so far",
            acked.lock().unwrap().len(),
            downstream.delivered().len()
        );
    }

    // A store killed this many times must still be sound.
    assert_eq!(integrity(dir.path()), "ok");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() as u64 > cycles * 10, "too little load to prove anything: {}", acked.len());

    let started = Instant::now();
    let _final = Server::start(&config);
    eventually("every acknowledged callback delivered", Duration::from_secs(60), || {
        let delivered = downstream.delivered();
        acked.iter().all(|sid| delivered.contains_key(sid))
    })
    .await;
    let drained = started.elapsed();

    let delivered = downstream.delivered();
    let lost = acked.iter().filter(|sid| !delivered.contains_key(*sid)).count();
    let redelivered: u64 = acked.iter().map(|sid| u64::from(delivered[sid].saturating_sub(1))).sum();
    let unacked_delivered = delivered.keys().filter(|sid| !acked.contains(*sid)).count();
    println!(
        "crash: seed={seed:#x} cycles={cycles} acknowledged={} lost={lost} redelivered={redelivered} \
         unacknowledged_but_delivered={unacked_delivered} interrupted_requests={unanswered} drain_after_restart={drained:.1?}",
        acked.len()
    );
    assert_eq!(lost, 0);
    // Every stored delivery ends delivered: none dead, none stuck.
    eventually("no delivery left pending", Duration::from_secs(20), || {
        let states = delivery_states(dir.path());
        states.keys().all(|s| s == "delivered")
    })
    .await;
}
