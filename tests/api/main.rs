//! End-to-end tests: the real app on port 0 over a temp directory, driven over HTTP.

mod helpers;
#[allow(dead_code)]
#[path = "../support/process.rs"]
mod process;
#[path = "../support/rng.rs"]
mod rng;
#[path = "../shared/signalwire_stub.rs"]
mod signalwire_stub;

mod callbacks;
mod delivery;
mod operations;
mod robustness;
mod sdk;
mod seed_handlers;
