//! `licagent import FILE`: verify a license file and install it through
//! the daemon (the daemon verifies again; it trusts nothing the CLI says).

use std::path::Path;

use super::{block_on, client, print_json, status, CliError};
use crate::api::types::Status;
use crate::config::Config;

pub fn run(config: &Config, file: &Path, replace: bool, json: bool) -> Result<(), CliError> {
    let text = read_input(file)?;
    // A quick local look first, so that "this is not a license file" does
    // not need the daemon.
    crate::license::parse(&text)
        .map_err(|e| CliError::Refused(format!("{}: {e}", file.display())))?;
    let path = if replace {
        "/v1/license?replace=1"
    } else {
        "/v1/license"
    };
    let status: Status = block_on(client(config).post(path, text.into_bytes(), "text/plain"))??;
    if json {
        print_json(&status)
    } else {
        println!("License installed.");
        status::print_human(&status);
        Ok(())
    }
}

fn read_input(file: &Path) -> Result<String, CliError> {
    let bytes = super::read_input(file)?;
    String::from_utf8(bytes).map_err(|_| {
        CliError::Refused(format!(
            "{} is not a text file, so not a license file",
            super::shown(file)
        ))
    })
}
