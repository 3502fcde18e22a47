//! The `recordhook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

// The system allocator, on purpose: mimalloc measured ~5% more requests/s here but commits
// its arenas eagerly, which put idle RSS at ~21 MiB against ~13 MiB (docs/benchmarks.md).

#[tokio::main]
async fn main() -> ExitCode {
    recordhook::cli::run(recordhook::cli::Cli::parse()).await
}
