//! `licportal`: the reference license portal for licagent. Parses the
//! command line, hands over to [`cli::run`] and maps failure to exit code 1.

mod cli;
mod clones;
mod db;
mod order;
mod server;
mod service;
mod sessions;
mod tls;

use std::io::IsTerminal;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; plain text into a file or a
        // pipe (a log must not carry escape codes). NO_COLOR turns them off.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LICPORTAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // rustls is built without a default provider choice; pick ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = cli::run(cli) {
        eprintln!("licportal: {e}");
        std::process::exit(1);
    }
}
