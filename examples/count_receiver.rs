//! A downstream for the end-to-end benchmark (`benches/scale.sh`): answers every POST with
//! 200 and counts them. `GET /count` returns the count so far.
//!
//! Usage: `cargo run --release --example count_receiver -- 127.0.0.1:18090`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

async fn receive(State(count): State<Arc<AtomicU64>>, body: axum::body::Bytes) -> &'static str {
    std::hint::black_box(body);
    count.fetch_add(1, Ordering::Relaxed);
    "ok"
}

async fn count(State(count): State<Arc<AtomicU64>>) -> String {
    format!("{}\n", count.load(Ordering::Relaxed))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:18090").parse()?;
    let state = Arc::new(AtomicU64::new(0));
    let app = Router::new().route("/hook", post(receive)).route("/count", get(count)).with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("count_receiver listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
