//! The `recordhook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

// The request path allocates many small, short-lived buffers across threads; mimalloc
// handles that pattern markedly better than glibc's allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    recordhook::cli::run(recordhook::cli::Cli::parse()).await
}
