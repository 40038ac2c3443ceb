//! The `licportal` subcommands: set up a data directory, manage customers,
//! PBX orders and their rehost count, list trials, tune settings and
//! faults, serve, and activate offline.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand};
use licagent::license::{LicenseError, PortalKey, SigningKey, Term};
use licagent::portal::wire::{ActivateRequest, RequestCode, WireError};
use serde_json::json;

use crate::db::{Db, DbError, Fault, FaultParseError, NewPbx, Pbx, PbxEdit, Settings};
use crate::order::{self, CountKind, OrderError};
use crate::server::{self, ServeError};
use crate::service::{self, ApiError, Issuer, Mode, RehostUsage};
use crate::sessions;
use crate::tls::{self, TlsError};

const DB_FILE: &str = "portal.db";
const KEY_FILE: &str = "signing.pk8";
const CA_FILE: &str = "ca.pem";
const TLS_DIR: &str = "tls";
const CERT_FILE: &str = "cert.pem";
const TLS_KEY_FILE: &str = "key.pem";

#[derive(Parser, Debug)]
#[command(
    name = "licportal",
    version,
    about = "Reference license portal for licagent"
)]
pub struct Cli {
    /// The portal's data directory (database, signing key, TLS material).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the data directory: database, signing key, TLS certificate.
    Init {
        /// Names the generated server certificate is valid for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        names: Vec<String>,
        /// Use this certificate chain (PEM) instead of generating a test CA.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) of --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Manage customers.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Manage PBX orders.
    #[command(subcommand)]
    Pbx(PbxCommand),
    /// Change portal settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// See the trials handed out.
    #[command(subcommand)]
    Trial(TrialCommand),
    /// Make the running server misbehave, for tests.
    #[command(subcommand)]
    Fault(FaultCommand),
    /// Serve the protocol over HTTPS.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Write the bound address here once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Turn a request code into a license file, as /v1/activate would.
    OfflineActivate {
        /// File holding the request code (any text around it is ignored).
        request_file: PathBuf,
        /// Write the license here instead of stdout.
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CustomerCommand {
    /// Add a customer.
    Add { name: String },
}

#[derive(Args, Debug)]
struct OrderArgs {
    /// Seats per profile, e.g. premium=5,essential=10 (replaces the list).
    #[arg(long)]
    seats: Option<String>,
    /// Add-on and system licenses, e.g. mobile=5 (replaces the list).
    #[arg(long)]
    addons: Option<String>,
    /// monthly, yearly, 5y or lifetime.
    #[arg(long)]
    term: Option<String>,
    /// soft or hard.
    #[arg(long)]
    enforcement: Option<String>,
}

#[derive(Subcommand, Debug)]
enum PbxCommand {
    /// Add a PBX order; prints its key and system serial.
    Add {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        order: OrderArgs,
    },
    /// Change an order; the device gets it at its next refresh.
    Edit {
        serial: String,
        #[command(flatten)]
        order: OrderArgs,
        /// End of term (Unix seconds), instead of now + term.
        #[arg(long)]
        ends_at: Option<i64>,
    },
    /// Revoke a PBX; its device learns it at its next refresh.
    Revoke {
        serial: String,
        #[arg(long, default_value = "revoked by the vendor")]
        reason: String,
    },
    /// List all PBXs.
    List,
    /// Show one PBX.
    Show { serial: String },
    /// Let a PBX rehost again: its rehosts so far stop counting.
    ResetRehosts { serial: String },
    /// Set the PBX's test mode policy (in its next license): off, a
    /// cool-down between sessions, a shorter session; --default removes it
    TestPolicy {
        serial: String,
        /// Turn test mode off on this PBX
        #[arg(long)]
        off: bool,
        /// Seconds between the end of a session and the next start
        #[arg(long, default_value_t = 0)]
        cooldown_secs: i64,
        /// Longest session in seconds (8 hours at most)
        #[arg(long, default_value_t = 8 * 3600)]
        max_secs: i64,
        /// Remove the policy: the agent's compiled-in one applies
        #[arg(long, conflicts_with_all = ["off", "cooldown_secs", "max_secs"])]
        default: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SettingsCommand {
    /// Set refresh_secs, grace_secs, rehost_limit, rehost_period_days,
    /// trial_secs or trial_seats, as key=value.
    Set {
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Show all settings.
    Show,
}

#[derive(Subcommand, Debug)]
enum TrialCommand {
    /// List every machine that got a trial.
    List,
}

#[derive(Subcommand, Debug)]
enum FaultCommand {
    /// none, slow:SECS, error500, garbage, down, wrong-nonce or unknown-signer.
    Set { fault: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--data DIR is required")]
    NoDataDir,
    #[error("{0} holds a signing key already; init refuses to overwrite it")]
    AlreadyInitialized(PathBuf),
    #[error("{0} is not initialized; run `licportal --data {0} init` first")]
    NotInitialized(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the signing key {0} is damaged: {1}")]
    SigningKey(PathBuf, LicenseError),
    #[error("cannot make a signing key: {0}")]
    KeyGen(LicenseError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Fault(#[from] FaultParseError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{0}")]
    RequestCode(#[from] WireError),
    #[error("the activation was refused: {}", .0.message)]
    Refused(ApiError),
    #[error("{0:?} is not of the form key=value")]
    SettingSyntax(String),
    #[error("{0}")]
    Usage(String),
    #[error("--ends-at cannot be set on a lifetime term")]
    LifetimeEnd,
    #[error("the async runtime could not start: {0}")]
    Runtime(std::io::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.to_path_buf();
    move |source| CliError::Io { what, path, source }
}

/// Runs one command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let data = cli.data.clone().ok_or(CliError::NoDataDir)?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Init { names, cert, key } => init(&data, &names, cert.zip(key), out),
        Command::Customer(CustomerCommand::Add { name }) => {
            open_db(&data)?.add_customer(&name, licagent::time::now())?;
            out.print(json!({ "customer": name }), || {
                format!("added customer {name}")
            });
            Ok(())
        }
        Command::Pbx(cmd) => pbx(&data, cmd, out),
        Command::Settings(cmd) => {
            let db = open_db(&data)?;
            if let SettingsCommand::Set { pairs } = cmd {
                // All pairs are checked before any is stored.
                let pairs = pairs
                    .iter()
                    .map(|pair| {
                        pair.split_once('=')
                            .ok_or_else(|| CliError::SettingSyntax(pair.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                db.set_settings(&pairs)?;
            }
            print_settings(&db.settings()?, out);
            Ok(())
        }
        Command::Trial(TrialCommand::List) => trial_list(&open_db(&data)?, out),
        Command::Fault(FaultCommand::Set { fault }) => {
            let fault: Fault = fault.parse()?;
            open_db(&data)?.set_fault(fault)?;
            out.print(json!({ "fault": fault.to_string() }), || {
                format!("fault {fault}")
            });
            Ok(())
        }
        Command::Serve { listen, addr_file } => serve(&data, &listen, addr_file),
        Command::OfflineActivate {
            request_file,
            out: file,
        } => offline_activate(&data, &request_file, file.as_deref()),
    }
}

fn print_settings(s: &Settings, out: Output) {
    let values: [(&str, serde_json::Value); 6] = [
        ("refresh_secs", s.refresh_secs.into()),
        ("grace_secs", s.grace_secs.into()),
        ("rehost_limit", s.rehost_limit.into()),
        ("rehost_period_days", s.rehost_period_days.into()),
        ("trial_secs", s.trial_secs.into()),
        ("trial_seats", order::format_counts(&s.trial_seats).into()),
    ];
    let text = || {
        values
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let object: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    out.print(serde_json::Value::Object(object), text);
}

fn trial_list(db: &Db, out: Output) -> Result<(), CliError> {
    let settings = db.settings()?;
    let now = licagent::time::now();
    let trials = db.list_trials()?;
    let ends = |first_at| service::trial_ends_at(&settings, first_at);
    if out.json {
        let list: Vec<_> = trials
            .iter()
            .map(|t| {
                json!({
                    "hardware_id": t.hardware_id,
                    "system_id": t.system_id,
                    "first_at": t.first_at,
                    "ends_at": ends(t.first_at),
                    "ended": now >= ends(t.first_at),
                    "last_at": t.last_at,
                    "downloads": t.downloads,
                })
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<18} {:<16} {:<22} {:<22} {:<8} DOWNLOADS",
        "HARDWARE", "SYSTEM", "FIRST DOWNLOAD", "ENDS", "STATE"
    );
    for t in &trials {
        let end = ends(t.first_at);
        println!(
            "{:<18} {:<16} {:<22} {:<22} {:<8} {}",
            short(&t.hardware_id),
            t.system_id,
            order::when(t.first_at),
            order::when(end),
            if now >= end { "ended" } else { "running" },
            t.downloads
        );
    }
    Ok(())
}

/// Prints for people, or JSON with `--json`.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn print(self, value: serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value:#}");
        } else {
            println!("{}", text());
        }
    }
}

fn open_db(data: &Path) -> Result<Db, CliError> {
    let path = data.join(DB_FILE);
    if !path.exists() {
        return Err(CliError::NotInitialized(data.to_path_buf()));
    }
    Ok(Db::open(&path)?)
}

fn load_key(data: &Path) -> Result<SigningKey, CliError> {
    let path = data.join(KEY_FILE);
    if !path.exists() {
        return Err(CliError::NotInitialized(data.to_path_buf()));
    }
    let pkcs8 = std::fs::read(&path).map_err(io("read", &path))?;
    SigningKey::from_pkcs8(&pkcs8).map_err(|e| CliError::SigningKey(path, e))
}

/// Creates a file only the owner can read; refuses to replace one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))
}

fn init(
    data: &Path,
    names: &[String],
    own_cert: Option<(PathBuf, PathBuf)>,
    out: Output,
) -> Result<(), CliError> {
    if data.join(KEY_FILE).exists() {
        return Err(CliError::AlreadyInitialized(data.to_path_buf()));
    }
    std::fs::create_dir_all(data).map_err(io("create", data))?;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restrict", data))?;
    let tls_dir = data.join(TLS_DIR);
    std::fs::create_dir_all(&tls_dir).map_err(io("create", &tls_dir))?;
    let cert_path = tls_dir.join(CERT_FILE);
    let key_path = tls_dir.join(TLS_KEY_FILE);

    // TLS first: a bad --cert must not leave a half-made directory with a key.
    let ca_path = match own_cert {
        Some((cert, key)) => {
            let cert_pem = std::fs::read(&cert).map_err(io("read", &cert))?;
            let key_pem = std::fs::read(&key).map_err(io("read", &key))?;
            std::fs::write(&cert_path, cert_pem).map_err(io("write", &cert_path))?;
            let _ = std::fs::remove_file(&key_path);
            write_private(&key_path, &key_pem)?;
            None
        }
        None => {
            let g = tls::generate(names)?;
            let ca = data.join(CA_FILE);
            std::fs::write(&ca, &g.ca_pem).map_err(io("write", &ca))?;
            std::fs::write(&cert_path, &g.cert_pem).map_err(io("write", &cert_path))?;
            let _ = std::fs::remove_file(&key_path);
            write_private(&key_path, g.key_pem.as_bytes())?;
            Some(ca)
        }
    };
    tls::server_config(&cert_path, &key_path)?;

    Db::open(&data.join(DB_FILE))?;
    let (key, pkcs8) = SigningKey::try_generate().map_err(CliError::KeyGen)?;
    write_private(&data.join(KEY_FILE), &pkcs8)?;
    let public = key.public_key();
    let ca_text = ca_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none (own certificate)".into());
    out.print(
        json!({
            "key_id": public.key_id(),
            "public_key": public.to_base64(),
            "ca": ca_path.as_ref().map(|p| p.display().to_string()),
            "data": data.display().to_string(),
        }),
        || {
            format!(
                "key id:     {}\npublic key: {}\nCA:         {ca_text}",
                public.key_id(),
                public.to_base64()
            )
        },
    );
    Ok(())
}

fn parse_order_counts(
    s: &Option<String>,
    kind: CountKind,
) -> Result<Option<std::collections::BTreeMap<String, u32>>, CliError> {
    Ok(s.as_deref()
        .map(|s| order::parse_counts(s, kind, &order::catalog()))
        .transpose()?)
}

fn pbx(data: &Path, cmd: PbxCommand, out: Output) -> Result<(), CliError> {
    let db = open_db(data)?;
    let now = licagent::time::now();
    match cmd {
        PbxCommand::Add {
            customer,
            name,
            order: o,
        } => {
            let kind = order::parse_term(o.term.as_deref().unwrap_or("yearly"))?;
            let enforcement = order::parse_enforcement(o.enforcement.as_deref().unwrap_or("soft"))?;
            let seats = parse_order_counts(&o.seats, CountKind::Seats)?.unwrap_or_default();
            let addons = parse_order_counts(&o.addons, CountKind::Addons)?.unwrap_or_default();
            // A serial or key collision is astronomically rare; draw again.
            for _ in 0..5 {
                let key = PortalKey::try_generate().map_err(|_| OrderError::Random)?;
                let p = NewPbx {
                    serial: order::new_serial()?,
                    key: key.as_str().to_string(),
                    customer: customer.clone(),
                    name: name.clone(),
                    term: Term {
                        kind,
                        ends_at: order::term_ends_at(kind, now),
                    },
                    enforcement,
                    seats: seats.clone(),
                    addons: addons.clone(),
                    created_at: now,
                };
                if db.add_pbx(&p)? {
                    out.print(
                        json!({ "serial": p.serial, "key": key.to_string(), "name": p.name,
                                "customer": p.customer }),
                        || format!("key:    {key}\nserial: {}", p.serial),
                    );
                    return Ok(());
                }
            }
            Err(OrderError::Random.into())
        }
        PbxCommand::Edit {
            serial,
            order: o,
            ends_at,
        } => {
            let current = db.pbx(&serial)?;
            let mut edit = PbxEdit {
                seats: parse_order_counts(&o.seats, CountKind::Seats)?,
                addons: parse_order_counts(&o.addons, CountKind::Addons)?,
                enforcement: o
                    .enforcement
                    .as_deref()
                    .map(order::parse_enforcement)
                    .transpose()?,
                term: None,
            };
            // A new term starts now; --ends-at sets the end by hand.
            let mut term = current.term;
            if let Some(t) = &o.term {
                let kind = order::parse_term(t)?;
                term = Term {
                    kind,
                    ends_at: order::term_ends_at(kind, now),
                };
                edit.term = Some(term);
            }
            if let Some(end) = ends_at {
                if term.kind == licagent::license::TermKind::Lifetime {
                    return Err(CliError::LifetimeEnd);
                }
                edit.term = Some(Term {
                    kind: term.kind,
                    ends_at: Some(end),
                });
            }
            db.edit_pbx(&serial, &edit)?;
            let p = db.pbx(&serial)?;
            let usage = service::rehost_usage(&db, &serial, &db.settings()?, now)?;
            out.print(pbx_json(&p, &usage, false), || pbx_text(&p, &usage));
            Ok(())
        }
        PbxCommand::Revoke { serial, reason } => {
            db.revoke(&serial, &reason, now)?;
            out.print(
                json!({ "serial": serial, "revoked": true, "reason": reason }),
                || format!("revoked {serial}: {reason}"),
            );
            Ok(())
        }
        PbxCommand::List => {
            let settings = db.settings()?;
            let all = db
                .list_pbx()?
                .into_iter()
                .map(|p| {
                    let usage = service::rehost_usage(&db, &p.serial, &settings, now)?;
                    Ok((p, usage))
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            if out.json {
                let list: Vec<_> = all.iter().map(|(p, u)| pbx_json(p, u, false)).collect();
                println!("{:#}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<20} {:<14} {:<18} {:<22} {:<28} {:<8} TERM END",
                    "NAME", "SERIAL", "HARDWARE", "LAST REFRESH", "SEATS", "REHOSTS"
                );
                for (p, usage) in &all {
                    println!(
                        "{:<20} {:<14} {:<18} {:<22} {:<28} {:<8} {}",
                        p.name,
                        p.serial,
                        p.binding
                            .as_ref()
                            .map(|b| short(&b.hardware_id))
                            .unwrap_or_else(|| "unbound".into()),
                        p.last_refresh_at
                            .map(order::when)
                            .unwrap_or_else(|| "never".into()),
                        order::format_counts(&p.seats),
                        format!("{}/{}", usage.count, usage.limit),
                        term_end(&p.term)
                    );
                }
            }
            Ok(())
        }
        PbxCommand::Show { serial } => {
            let p = db.pbx(&serial)?;
            let usage = service::rehost_usage(&db, &serial, &db.settings()?, now)?;
            let duplicate = db.duplicate(&serial)?;
            let sightings = db.sightings(&serial)?;
            let sessions =
                db.test_sessions_since(&serial, now.saturating_sub(sessions::SESSION_WINDOW_SECS))?;
            let policy = db.test_policy(&serial)?;
            if out.json {
                let mut v = pbx_json(&p, &usage, true);
                v["licenses_issued"] = json!(db.licenses_issued(&serial)?);
                v["duplicate"] = json!(duplicate.as_ref().map(|d| json!({
                    "hardware_id": d.hardware_id,
                    "kept_hardware_id": d.kept_hardware_id,
                    "detected_at": d.detected_at,
                    "last_at": d.last_at,
                    "attempts": d.attempts,
                })));
                v["seen_from"] = json!(sightings
                    .iter()
                    .map(|s| json!({
                        "hardware_id": s.hardware_id,
                        "first_at": s.first_at,
                        "last_at": s.last_at,
                    }))
                    .collect::<Vec<_>>());
                v["test_mode_30d"] = json!({
                    "sessions": sessions.len(),
                    "hours": sessions::hours(&sessions),
                    "list": sessions.iter().map(|s| json!({
                        "started_at": s.started_at, "ended_at": s.ended_at, "how": s.how,
                    })).collect::<Vec<_>>(),
                });
                v["test_policy"] = json!(policy.map(|p| json!({
                    "allowed": p.allowed, "max_secs": p.max_secs, "cooldown_secs": p.cooldown_secs,
                })));
                println!("{v:#}");
            } else {
                println!("{}", pbx_text(&p, &usage));
                if let Ok(key) = PortalKey::parse(&p.key) {
                    println!("key:          {key}");
                }
                if let Some(d) = &duplicate {
                    println!(
                        "DUPLICATE:    box {} refused since {} ({} attempts, last {}); {} keeps the license; a rehost settles it",
                        short(&d.hardware_id),
                        order::when(d.detected_at),
                        d.attempts,
                        order::when(d.last_at),
                        short(&d.kept_hardware_id)
                    );
                }
                for s in &sightings {
                    println!(
                        "seen from:    {} {} .. {}",
                        short(&s.hardware_id),
                        order::when(s.first_at),
                        order::when(s.last_at)
                    );
                }
                println!(
                    "test mode:    {} sessions, {:.1} hours in the last 30 days{}",
                    sessions.len(),
                    sessions::hours(&sessions),
                    match &policy {
                        None => String::new(),
                        Some(p) if !p.allowed => " (policy: off)".into(),
                        Some(p) => format!(
                            " (policy: up to {} s, {} s between sessions)",
                            p.max_secs, p.cooldown_secs
                        ),
                    }
                );
                for s in &sessions {
                    println!(
                        "  session:    {} .. {} ({})",
                        order::when(s.started_at),
                        order::when(s.ended_at),
                        s.how
                    );
                }
                for h in db.history(&serial)? {
                    println!(
                        "released:     {} at {} ({}{})",
                        short(&h.hardware_id),
                        order::when(h.released_at),
                        h.reason,
                        h.moved_to
                            .map(|m| format!(", moved to {}", short(&m)))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        PbxCommand::TestPolicy {
            serial,
            off,
            cooldown_secs,
            max_secs,
            default,
        } => {
            if !(1..=8 * 3600).contains(&max_secs) || cooldown_secs < 0 {
                return Err(CliError::Usage(
                    "--max-secs must be 1 to 28800 and --cooldown-secs 0 or more".into(),
                ));
            }
            let policy = (!default).then_some(licagent::license::TestModePolicy {
                allowed: !off,
                max_secs,
                cooldown_secs,
            });
            db.set_test_policy(&serial, policy.as_ref())?;
            out.print(
                json!({ "serial": serial, "test_policy": policy.map(|p| json!({
                    "allowed": p.allowed, "max_secs": p.max_secs, "cooldown_secs": p.cooldown_secs,
                })) }),
                || match policy {
                    None => format!("{serial}: test mode follows the agent's built-in policy"),
                    Some(p) if !p.allowed => format!("{serial}: test mode off (from its next license)"),
                    Some(p) => format!(
                        "{serial}: test mode up to {} s, {} s between sessions (from its next license)",
                        p.max_secs, p.cooldown_secs
                    ),
                },
            );
            Ok(())
        }
        PbxCommand::ResetRehosts { serial } => {
            db.reset_rehosts(&serial, now)?;
            let usage = service::rehost_usage(&db, &serial, &db.settings()?, now)?;
            out.print(
                json!({ "serial": serial, "rehosts": rehosts_json(&usage) }),
                || {
                    format!(
                        "reset the rehost count of {serial}: {}",
                        rehosts_text(&usage)
                    )
                },
            );
            Ok(())
        }
    }
}

fn rehosts_json(u: &RehostUsage) -> serde_json::Value {
    json!({
        "count": u.count,
        "limit": u.limit,
        "period_days": u.period_days,
        "next_at": u.next_at,
    })
}

fn rehosts_text(u: &RehostUsage) -> String {
    let mut s = format!(
        "{} of {} in the last {} days",
        u.count, u.limit, u.period_days
    );
    if let Some(next) = u.next_at {
        s.push_str(&format!(
            " (limit reached; next rehost from {})",
            order::when(next)
        ));
    }
    s
}

/// The first 16 characters of a hardware ID: enough to tell boxes apart.
fn short(hw: &str) -> String {
    hw.chars().take(16).collect()
}

fn term_end(t: &Term) -> String {
    t.ends_at.map(order::when).unwrap_or_else(|| "never".into())
}

fn pbx_json(p: &Pbx, rehosts: &RehostUsage, with_key: bool) -> serde_json::Value {
    let mut v = json!({
        "serial": p.serial,
        "name": p.name,
        "customer": p.customer,
        "term": order::term_name(p.term.kind),
        "ends_at": p.term.ends_at,
        "enforcement": order::enforcement_name(p.enforcement),
        "seats": p.seats,
        "addons": p.addons,
        "hardware_id": p.binding.as_ref().map(|b| b.hardware_id.clone()),
        "bound_at": p.binding.as_ref().map(|b| b.bound_at),
        "last_refresh_at": p.last_refresh_at,
        "seats_in_use": p.seats_in_use,
        "revoked": p.revoked.as_ref().map(|r| json!({ "at": r.at, "reason": r.reason })),
        "rehosts": rehosts_json(rehosts),
        "rehosts_reset_at": p.rehosts_reset_at,
    });
    if with_key {
        v["key"] = json!(PortalKey::parse(&p.key)
            .map(|k| k.to_string())
            .unwrap_or_else(|_| p.key.clone()));
    }
    v
}

fn pbx_text(p: &Pbx, rehosts: &RehostUsage) -> String {
    let mut s = format!(
        "name:         {}\nserial:       {}\ncustomer:     {}\nterm:         {} (ends {})\nenforcement:  {}\nseats:        {}\naddons:       {}\nhardware:     {}\nlast refresh: {}\nseats in use: {}\nrehosts:      {}",
        p.name,
        p.serial,
        p.customer,
        order::term_name(p.term.kind),
        term_end(&p.term),
        order::enforcement_name(p.enforcement),
        order::format_counts(&p.seats),
        order::format_counts(&p.addons),
        p.binding
            .as_ref()
            .map(|b| b.hardware_id.clone())
            .unwrap_or_else(|| "unbound".into()),
        p.last_refresh_at
            .map(order::when)
            .unwrap_or_else(|| "never".into()),
        order::format_counts(&p.seats_in_use),
        rehosts_text(rehosts),
    );
    if let Some(at) = p.rehosts_reset_at {
        s.push_str(&format!("\nrehosts reset: {}", order::when(at)));
    }
    if let Some(r) = &p.revoked {
        s.push_str(&format!(
            "\nrevoked:      {} ({})",
            order::when(r.at),
            r.reason
        ));
    }
    s
}

fn serve(data: &Path, listen: &str, addr_file: Option<PathBuf>) -> Result<(), CliError> {
    let db = open_db(data)?;
    let key = load_key(data)?;
    let tls_dir = data.join(TLS_DIR);
    let config = tls::server_config(&tls_dir.join(CERT_FILE), &tls_dir.join(TLS_KEY_FILE))?;
    let state = Arc::new(server::State {
        db: Mutex::new(db),
        key,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(server::serve(state, config, listen, addr_file))?;
    Ok(())
}

fn offline_activate(data: &Path, request: &Path, out: Option<&Path>) -> Result<(), CliError> {
    let db = open_db(data)?;
    let key = load_key(data)?;
    let text = std::fs::read_to_string(request).map_err(io("read", request))?;
    let code = RequestCode::decode(&text)?;
    let req = ActivateRequest {
        key: code.key,
        hardware_id: code.hardware_id,
        components: code.components,
        device_public_key: code.device_public_key,
        nonce: code.nonce,
        agent_version: "offline".into(),
    };
    let license = service::activate(
        &db,
        &Issuer::new(&key),
        &req,
        Mode::Activate,
        licagent::time::now(),
    )
    .map_err(CliError::Refused)?;
    match out {
        Some(path) => std::fs::write(path, &license).map_err(io("write", path))?,
        None => print!("{license}"),
    }
    Ok(())
}
