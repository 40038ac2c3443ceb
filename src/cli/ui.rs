//! `licagent ui`: serves the Activation / Licenses page on loopback TCP
//! (src/ui/serve.rs), until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use super::{block_on, CliError};
use crate::config::Config;
use crate::ui::serve::{self, Options};

pub fn run(
    config: &Config,
    listen: String,
    listen_public: bool,
    addr_file: Option<PathBuf>,
) -> Result<(), CliError> {
    // Refused before anything starts, with the reason.
    serve::listen_addr(&listen, listen_public).map_err(CliError::Refused)?;
    let opts = Options {
        listen,
        listen_public,
        addr_file,
        socket: config.paths.socket.clone(),
    };
    block_on(async {
        let stop = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        serve::run(opts, stop).await
    })?
    .map_err(CliError::Failed)
}
