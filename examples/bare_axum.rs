//! The lower bound for the `benches/run.sh` comparison: the same HTTP stack as recordhook
//! (axum 0.8 on a multi-thread tokio runtime) with nothing but form parsing. It decodes the
//! body into a struct with SignalWire's eight required fields and answers 200; no
//! signature check, no validation beyond "the fields are there", no storage.
//!
//! Usage: `cargo run --release --example bare_axum -- 127.0.0.1:18081`

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Form;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

/// The eight fields every RecordingStatusCallback carries.
// The fields are parsed (that is the work being measured) but never read.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Callback {
    account_sid: String,
    call_sid: String,
    recording_sid: String,
    recording_url: String,
    recording_status: String,
    recording_duration: u64,
    recording_channels: u32,
    recording_source: String,
}

async fn receive(Form(callback): Form<Callback>) -> StatusCode {
    std::hint::black_box(callback);
    StatusCode::OK
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:18081").parse()?;
    let app = Router::new().route("/recording-status", post(receive));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bare_axum listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
