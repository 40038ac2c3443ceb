//! `licagent activate KEY`, `licagent refresh` and `licagent request-code
//! KEY`: the portal path, run by the daemon (it holds the device key).

use std::io::Read;

use super::{block_on, client, print_json, status, CliError};
use crate::api::types::{ActivateBody, RequestCodeAnswer, RequestCodeBody, Status, TrialBody};
use crate::config::Config;
use crate::license::PortalKey;

/// The key as typed: several words (pasted with spaces) or `-` for stdin,
/// so that it need not appear in the process list.
pub fn read_key(words: &[String]) -> Result<PortalKey, CliError> {
    let text = if words.len() == 1 && words[0] == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            CliError::Failed(format!("cannot read the key from standard input: {e}"))
        })?;
        s
    } else {
        words.join(" ")
    };
    // Checked here, before any call: a typo never reaches the portal.
    PortalKey::parse(&text).map_err(|e| CliError::Refused(e.to_string()))
}

pub fn activate(
    config: &Config,
    words: &[String],
    rehost: bool,
    json: bool,
) -> Result<(), CliError> {
    let key = read_key(words)?;
    let body = ActivateBody {
        key: key.as_str().to_string(),
        rehost,
    };
    let body = serde_json::to_vec(&body).map_err(|e| CliError::Failed(e.to_string()))?;
    let st: Status = block_on(client(config).post("/v1/activate", body, "application/json"))??;
    if json {
        return print_json(&st);
    }
    println!("Activated with key {}.", key.redacted());
    status::print_human(&st);
    Ok(())
}

pub fn refresh(config: &Config, json: bool) -> Result<(), CliError> {
    let st: Status = block_on(client(config).post("/v1/refresh", Vec::new(), "application/json"))??;
    if json {
        return print_json(&st);
    }
    println!("Refreshed.");
    status::print_human(&st);
    Ok(())
}

pub fn request_code(config: &Config, words: &[String]) -> Result<(), CliError> {
    let key = read_key(words)?;
    let body = serde_json::to_vec(&RequestCodeBody {
        key: key.as_str().to_string(),
    })
    .map_err(|e| CliError::Failed(e.to_string()))?;
    let ans: RequestCodeAnswer =
        block_on(client(config).post("/v1/request-code", body, "application/json"))??;
    print!("{}", ans.request_code);
    if !ans.request_code.ends_with('\n') {
        println!();
    }
    eprintln!(
        "Carry this code to the portal (licportal offline-activate), then `licagent import` the license file it gives."
    );
    Ok(())
}

pub fn deactivate(config: &Config, json: bool) -> Result<(), CliError> {
    let st: Status =
        block_on(client(config).post("/v1/deactivate", Vec::new(), "application/json"))??;
    if json {
        return print_json(&st);
    }
    println!(
        "Deactivated: the portal released this box's binding; the key can activate another box."
    );
    status::print_human(&st);
    Ok(())
}

pub fn trial(config: &Config, replace: bool, json: bool) -> Result<(), CliError> {
    let body =
        serde_json::to_vec(&TrialBody { replace }).map_err(|e| CliError::Failed(e.to_string()))?;
    let st: Status = block_on(client(config).post("/v1/trial", body, "application/json"))??;
    if json {
        return print_json(&st);
    }
    println!("Trial license installed.");
    status::print_human(&st);
    Ok(())
}
