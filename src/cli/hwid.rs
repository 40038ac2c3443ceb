//! `licagent hwid`: this machine's hardware ID, computed here (no daemon
//! needed), and with `--explain FILE` how it compares with a license.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{print_json, CliError};
use crate::config::Config;
use crate::hwid::{self, Component, MatchVerdict};
use crate::license::{self, LicensePayload};

#[derive(Serialize)]
struct Explain<'a> {
    license_id: &'a str,
    system_id: &'a str,
    license_hardware_id: &'a str,
    hardware_id: &'a str,
    verdict: MatchVerdict,
    signature_verified: bool,
    missing: Vec<Component>,
    added: Vec<Component>,
}

pub fn run(
    config: &Config,
    json: bool,
    explain: Option<&Path>,
    root: Option<PathBuf>,
) -> Result<(), CliError> {
    let root = root.unwrap_or_else(|| config.hwid.root.clone());
    let info = hwid::collect(&root).map_err(|e| CliError::Failed(e.to_string()))?;
    let Some(file) = explain else {
        if json {
            return print_json(&info);
        }
        println!("{}", info.hardware_id);
        for c in &info.components {
            println!("  {:<13} {}", kind_name(c), &c.hash[..16]);
        }
        for w in &info.warnings {
            eprintln!("warning: {w}");
        }
        return Ok(());
    };
    let text = String::from_utf8(super::read_input(file)?)
        .map_err(|_| CliError::Refused(format!("{} is not a license file", super::shown(file))))?;
    let (payload, verified) = read_payload(&text, config)
        .map_err(|e| CliError::Refused(format!("{}: {e}", file.display())))?;
    let m = hwid::compare(&payload.hardware, &info.components);
    let out = Explain {
        license_id: &payload.license_id,
        system_id: &payload.system_id,
        license_hardware_id: &payload.hardware_id,
        hardware_id: &info.hardware_id,
        verdict: m.verdict,
        signature_verified: verified,
        missing: m.missing.clone(),
        added: m.added.clone(),
    };
    if json {
        return print_json(&out);
    }
    println!(
        "License:      {} (system {})",
        out.license_id, out.system_id
    );
    println!("Bound to:     {}", out.license_hardware_id);
    println!("This machine: {}", out.hardware_id);
    let verdict = match m.verdict {
        MatchVerdict::Match => "match: this is the machine the license was issued for",
        MatchVerdict::Partial => "partial: some components changed; the license stays valid and the next refresh re-binds it",
        MatchVerdict::Mismatch => "mismatch: the license was issued for another machine; rehost it from the portal",
    };
    println!("Verdict:      {verdict}");
    for c in &m.missing {
        println!("  gone:       {} {}", kind_name(c), &c.hash[..16]);
    }
    for c in &m.added {
        println!("  new:        {} {}", kind_name(c), &c.hash[..16]);
    }
    if !verified {
        println!("Note:         the license signature could not be verified with the trusted keys");
    }
    Ok(())
}

/// The payload, verified when a trusted key is at hand. Explaining a file
/// signed by an unknown key still helps a technician, so that case is shown
/// (marked unverified) rather than refused; nothing is installed from it.
fn read_payload(
    text: &str,
    config: &Config,
) -> Result<(LicensePayload, bool), license::LicenseError> {
    let ring = config.key_ring()?;
    match license::verify(text, &ring) {
        Ok(p) => Ok((p, true)),
        Err(license::LicenseError::UnknownKey(_)) => {
            let signed = license::parse(text)?;
            let p = serde_json::from_slice(&signed.payload_bytes)
                .map_err(|e| license::LicenseError::Damaged(e.to_string()))?;
            Ok((p, false))
        }
        Err(e) => Err(e),
    }
}

fn kind_name(c: &Component) -> &'static str {
    c.kind.name()
}
