//! `licagent run`: the daemon.

use std::path::PathBuf;

use super::CliError;
use crate::config::Config;
use crate::daemon;

pub fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), CliError> {
    daemon::init_logging(&config.log.level);
    daemon::run(config, config_path).map_err(|e| {
        tracing::error!("{e}");
        CliError::Failed(e.to_string())
    })
}
