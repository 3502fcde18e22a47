//! The `recordhook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    recordhook::cli::run(recordhook::cli::Cli::parse()).await
}
