//! `pagestream`: the command line (see the library for the commands).

use std::process::ExitCode;

use clap::Parser;
use pagestream_cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings (such as events a replay skipped) go to stderr; RUST_LOG shows more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match run(cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
