//! `licagent users ...` and `licagent seats`: the PBX's users, their
//! profiles and add-ons, bulk import, the audit, and seats per profile.

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;
use serde::de::DeserializeOwned;

use super::{block_on, client, print_json, CliError};
use crate::api::users::{AddonBody, Deleted, ProfileBody, Restored};
use crate::api::ClientError;
use crate::config::Config;
use crate::daemon::agent::users::UsersExport;
use crate::seats::{AuditEntry, ImportPreview, NewUser, SeatSummary, UserKind, UserReport};

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users, optionally filtered
    List {
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        addon: Option<String>,
        /// Part of the name, the start of the extension, or the id
        #[arg(long)]
        search: Option<String>,
        /// Only users missing a license
        #[arg(long)]
        unlicensed: bool,
        #[arg(long)]
        json: bool,
    },
    /// One user's entitlements: profile, add-ons, what is missing
    Show {
        /// User id (or an extension with --extension)
        id: String,
        #[arg(long)]
        extension: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create a user (the default profile unless --profile)
    Add {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        extension: String,
        #[arg(long)]
        number: Option<String>,
        /// regular, admin or virtual
        #[arg(long, default_value = "regular", value_parser = ["regular", "admin", "virtual"])]
        kind: String,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a user
    Remove { id: String },
    /// Assign (or reassign) a base profile
    Assign {
        id: String,
        profile: String,
        #[arg(long)]
        json: bool,
    },
    /// Take the base profile away
    Unassign {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Add or remove an add-on
    Addon {
        #[arg(value_parser = ["add", "remove"])]
        action: String,
        id: String,
        code: String,
        #[arg(long)]
        json: bool,
    },
    /// Bulk import from CSV (extension,number,name,profile[,add-on...]); all rows or none; FILE or - for stdin
    Import {
        file: PathBuf,
        /// Check and show the result without changing anything
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Who changed which assignment, newest first
    Audit {
        #[arg(long)]
        user: Option<String>,
        /// Only changes that involved this profile or add-on
        #[arg(long)]
        code: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

fn call<T: DeserializeOwned>(
    config: &Config,
    method: Method,
    path: &str,
    body: Vec<u8>,
    ct: &str,
) -> Result<T, CliError> {
    Ok(block_on(client(config).send(method, path, body, ct))??)
}

fn get<T: DeserializeOwned>(config: &Config, path: &str) -> Result<T, CliError> {
    call(config, Method::GET, path, vec![], "application/json")
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, CliError> {
    serde_json::to_vec(v).map_err(|e| CliError::Failed(e.to_string()))
}

/// Everything but RFC 3986's unreserved characters is escaped.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ESCAPED).to_string()
}

pub fn run(config: &Config, cmd: UsersCmd) -> Result<(), CliError> {
    const JSON: &str = "application/json";
    match cmd {
        UsersCmd::List {
            profile,
            addon,
            search,
            unlicensed,
            json,
        } => {
            let mut q = vec![];
            if let Some(p) = profile {
                q.push(format!("profile={}", enc(&p)));
            }
            if let Some(a) = addon {
                q.push(format!("addon={}", enc(&a)));
            }
            if let Some(s) = search {
                q.push(format!("q={}", enc(&s)));
            }
            if unlicensed {
                q.push("licensed=false".into());
            }
            let users: Vec<UserReport> = get(config, &format!("/v1/users?{}", q.join("&")))?;
            if json {
                return print_json(&users);
            }
            println!(
                "{:<12} {:<8} {:<24} {:<12} {:<9} ADD-ONS / MISSING",
                "ID", "EXT", "NAME", "PROFILE", "LICENSED"
            );
            for u in &users {
                let profile = u.profile.as_ref().map_or("-", |p| p.code.as_str());
                let addons: Vec<&str> = u.addons.iter().map(|a| a.code.as_str()).collect();
                let missing = if u.missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing {})", u.missing.join(", "))
                };
                println!(
                    "{:<12} {:<8} {:<24} {:<12} {:<9} {}{missing}",
                    u.id,
                    u.extension,
                    u.name,
                    profile,
                    if u.licensed { "yes" } else { "no" },
                    addons.join(",")
                );
            }
            eprintln!("{} users", users.len());
            Ok(())
        }
        UsersCmd::Show {
            id,
            extension,
            json,
        } => {
            let path = if extension {
                format!("/v1/entitlement?extension={}", enc(&id))
            } else {
                format!("/v1/users/{}", enc(&id))
            };
            let u: UserReport = get(config, &path)?;
            show(&u, json)
        }
        UsersCmd::Add {
            id,
            name,
            extension,
            number,
            kind,
            profile,
            json,
        } => {
            // clap allows only the three words.
            let kind = UserKind::parse(&kind).unwrap_or(UserKind::Regular);
            let body = to_json(&NewUser {
                id,
                name,
                extension,
                number,
                kind,
                profile,
                addons: vec![],
            })?;
            let u: UserReport = call(config, Method::POST, "/v1/users", body, JSON)?;
            show(&u, json)
        }
        UsersCmd::Remove { id } => {
            let d: Deleted = call(
                config,
                Method::DELETE,
                &format!("/v1/users/{}", enc(&id)),
                vec![],
                JSON,
            )?;
            println!("User {} deleted.", d.deleted);
            Ok(())
        }
        UsersCmd::Assign { id, profile, json } => {
            let body = to_json(&ProfileBody { profile })?;
            let u: UserReport = call(
                config,
                Method::PUT,
                &format!("/v1/users/{}/profile", enc(&id)),
                body,
                JSON,
            )?;
            show(&u, json)
        }
        UsersCmd::Unassign { id, json } => {
            let u: UserReport = call(
                config,
                Method::DELETE,
                &format!("/v1/users/{}/profile", enc(&id)),
                vec![],
                JSON,
            )?;
            show(&u, json)
        }
        UsersCmd::Addon {
            action,
            id,
            code,
            json,
        } => {
            let u: UserReport = if action == "add" {
                let body = to_json(&AddonBody { code })?;
                call(
                    config,
                    Method::POST,
                    &format!("/v1/users/{}/addons", enc(&id)),
                    body,
                    JSON,
                )?
            } else {
                let path = format!("/v1/users/{}/addons/{}", enc(&id), enc(&code));
                call(config, Method::DELETE, &path, vec![], JSON)?
            };
            show(&u, json)
        }
        UsersCmd::Import {
            file,
            dry_run,
            json,
        } => {
            let bytes = super::read_input(&file)?;
            let path = format!("/v1/users/import?dry_run={dry_run}");
            let result: Result<ImportPreview, CliError> =
                call(config, Method::POST, &path, bytes, "text/csv");
            let preview = match result {
                Ok(p) => p,
                Err(CliError::Client(ClientError::Refused {
                    message,
                    rows,
                    status,
                    code,
                })) => {
                    // Every bad row, one per line, then the summary sentence
                    // (under --json the rows are in the error object).
                    for r in &rows {
                        eprintln!("{}:{}: {}", super::shown(&file), r.line, r.reason);
                    }
                    return Err(CliError::Client(ClientError::Refused {
                        status,
                        code,
                        message: format!("nothing was imported: {message}"),
                        rows,
                    }));
                }
                Err(e) => return Err(e),
            };
            if json {
                return print_json(&preview);
            }
            let verb = if dry_run { "Would import" } else { "Imported" };
            println!(
                "{verb} {} rows: {} new users, {} updated, {} unchanged.",
                preview.rows, preview.created, preview.updated, preview.unchanged
            );
            print_seats(&preview.summary);
            for o in &preview.over_use {
                println!(
                    "Over-use: {} users hold {} with {} seats bought",
                    o.used, o.name, o.purchased
                );
            }
            Ok(())
        }
        UsersCmd::Audit {
            user,
            code,
            limit,
            json,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(u) = user {
                q.push(format!("user={}", enc(&u)));
            }
            if let Some(c) = code {
                q.push(format!("code={}", enc(&c)));
            }
            let rows: Vec<AuditEntry> = get(config, &format!("/v1/audit?{}", q.join("&")))?;
            if json {
                return print_json(&rows);
            }
            for r in &rows {
                let rec = &r.record;
                let totals: Vec<String> = rec
                    .totals
                    .iter()
                    .map(|(c, t)| match t.purchased {
                        Some(p) => format!("{c} {}/{p}", t.used),
                        None => format!("{c} {}", t.used),
                    })
                    .collect();
                println!(
                    "{} uid {} {} {}: {}; seats after: {}",
                    crate::time::rfc3339(rec.at),
                    rec.caller_uid,
                    rec.action.as_str(),
                    rec.user_id,
                    audit_changes(rec.before.as_ref(), rec.after.as_ref()),
                    list_or_none(&totals)
                );
            }
            Ok(())
        }
    }
}

/// What an audit row changed, in words: the profile, each add-on added or
/// removed, and the other fields.
fn audit_changes(
    before: Option<&crate::seats::UserSnapshot>,
    after: Option<&crate::seats::UserSnapshot>,
) -> String {
    let (b, a) = match (before, after) {
        (None, Some(a)) => {
            let mut s = format!(
                "created with profile {}",
                a.profile.as_deref().unwrap_or("none")
            );
            if !a.addons.is_empty() {
                s.push_str(&format!(", add-ons {}", a.addons.join(", ")));
            }
            return s;
        }
        (Some(_), None) => return "deleted".to_string(),
        (Some(b), Some(a)) => (b, a),
        (None, None) => return "no change".to_string(),
    };
    let mut out = Vec::new();
    if b.profile != a.profile {
        out.push(format!(
            "profile {} -> {}",
            b.profile.as_deref().unwrap_or("none"),
            a.profile.as_deref().unwrap_or("none")
        ));
    }
    for code in a.addons.iter().filter(|c| !b.addons.contains(c)) {
        out.push(format!("add-on {code} added"));
    }
    for code in b.addons.iter().filter(|c| !a.addons.contains(c)) {
        out.push(format!("add-on {code} removed"));
    }
    if b.name != a.name {
        out.push(format!("name {:?} -> {:?}", b.name, a.name));
    }
    if b.extension != a.extension {
        out.push(format!("extension {} -> {}", b.extension, a.extension));
    }
    if b.number != a.number {
        out.push(format!(
            "number {} -> {}",
            b.number.as_deref().unwrap_or("none"),
            a.number.as_deref().unwrap_or("none")
        ));
    }
    if b.kind != a.kind {
        out.push(format!("kind {:?} -> {:?}", b.kind, a.kind).to_lowercase());
    }
    if out.is_empty() {
        "no change".to_string()
    } else {
        out.join(", ")
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

pub fn seats(config: &Config, json: bool) -> Result<(), CliError> {
    let summary: Vec<SeatSummary> = get(config, "/v1/seats")?;
    if json {
        return print_json(&summary);
    }
    print_seats(&summary);
    Ok(())
}

fn print_seats(summary: &[SeatSummary]) {
    println!(
        "{:<16} {:>9} {:>6} {:>6} {:>6}",
        "PROFILE/ADD-ON", "PURCHASED", "USED", "FREE", "OVER"
    );
    for s in summary {
        let purchased = s
            .purchased
            .map_or("unlimited".to_string(), |p| p.to_string());
        let free = s.available.map_or("-".to_string(), |a| a.to_string());
        println!(
            "{:<16} {:>9} {:>6} {:>6} {:>6}",
            s.code, purchased, s.used, free, s.over
        );
    }
}

fn show(u: &UserReport, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(u);
    }
    println!(
        "User:       {} ({}), extension {}",
        u.name, u.id, u.extension
    );
    println!("Licensed:   {}", if u.licensed { "yes" } else { "no" });
    match &u.profile {
        Some(p) => println!(
            "Profile:    {} {}",
            p.code,
            note(p.licensed, p.note.as_deref())
        ),
        None => println!("Profile:    none"),
    }
    for a in &u.addons {
        println!(
            "Add-on:     {} {}",
            a.code,
            note(a.licensed, a.note.as_deref())
        );
    }
    if !u.missing.is_empty() {
        println!("Missing:    {}", u.missing.join(", "));
    }
    Ok(())
}

fn note(licensed: bool, note: Option<&str>) -> String {
    if licensed {
        "(licensed)".into()
    } else {
        format!("(NOT licensed: {})", note.unwrap_or("no seat"))
    }
}

/// `licagent export FILE`: the users, for the box that replaces this one.
pub fn export(config: &Config, file: &std::path::Path) -> Result<(), CliError> {
    let x: UsersExport = call(
        config,
        Method::POST,
        "/v1/export",
        vec![],
        "application/json",
    )?;
    let mut text = serde_json::to_vec_pretty(&x).map_err(|e| CliError::Failed(e.to_string()))?;
    if file == std::path::Path::new("-") {
        // The export itself is the output; the summary goes to stderr.
        use std::io::Write;
        text.push(b'\n');
        std::io::stdout()
            .write_all(&text)
            .map_err(|e| CliError::Failed(format!("cannot write the export: {e}")))?;
        eprintln!(
            "Exported {} users of system {}.",
            x.users.len(),
            x.system_id
        );
        return Ok(());
    }
    write_private(file, &text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", file.display())))?;
    println!(
        "Exported {} users of system {} to {}.",
        x.users.len(),
        x.system_id,
        file.display()
    );
    Ok(())
}

/// `licagent restore FILE`: loads an export onto this (new) box.
pub fn restore(config: &Config, file: &std::path::Path) -> Result<(), CliError> {
    let bytes = super::read_input(file)?;
    let x: UsersExport = serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Refused(format!(
            "{} is not a licagent export: {e}",
            super::shown(file)
        ))
    })?;
    let r: Restored = call(
        config,
        Method::POST,
        "/v1/restore",
        to_json(&x)?,
        "application/json",
    )?;
    println!("Restored {} users of system {}.", r.restored, x.system_id);
    Ok(())
}

/// The export names people and numbers: 0600, written whole or not at all.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seats::{UserKind, UserSnapshot};

    fn snap(profile: Option<&str>, addons: &[&str]) -> UserSnapshot {
        UserSnapshot {
            name: "Ann".into(),
            extension: "201".into(),
            number: None,
            kind: UserKind::Regular,
            profile: profile.map(str::to_string),
            addons: addons.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn audit_rows_name_the_add_on_that_changed() {
        let b = snap(Some("essential"), &[]);
        let a = snap(Some("essential"), &["mobile"]);
        assert_eq!(audit_changes(Some(&b), Some(&a)), "add-on mobile added");
        assert_eq!(audit_changes(Some(&a), Some(&b)), "add-on mobile removed");
        let p = snap(Some("premium"), &["mobile"]);
        assert_eq!(
            audit_changes(Some(&a), Some(&p)),
            "profile essential -> premium"
        );
        assert_eq!(
            audit_changes(None, Some(&p)),
            "created with profile premium, add-ons mobile"
        );
        assert_eq!(audit_changes(Some(&p), None), "deleted");
        let mut r = p.clone();
        r.extension = "202".into();
        r.kind = UserKind::Virtual;
        assert_eq!(
            audit_changes(Some(&p), Some(&r)),
            "extension 201 -> 202, kind regular -> virtual"
        );
    }
}
