//! The `licagent` subcommands, one file each. Results go to stdout, one
//! sentence of diagnosis to stderr, and the exit code says what kind of
//! failure it was (docs/cli.md).

mod activate;
mod hwid;
mod import;
pub mod pipe;
mod run;
mod status;
mod testmode;
mod ui;
mod users;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::{Client, ClientError};
use crate::config::{self, Config, ConfigError};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_RUNNING: i32 = 3;
pub const EXIT_DENIED: i32 = 4;
pub const EXIT_REFUSED: i32 = 5;
pub const EXIT_CONFIG: i32 = 6;

/// `licagent status` exits by state (docs/cli.md), like `systemctl
/// is-active`: 0 when the PBX is licensed and nothing needs doing (active,
/// trial, test mode), these otherwise. They do not overlap the failure
/// codes above, so a script tells "the box is expired" from "the daemon is
/// not running".
pub const EXIT_STATE_GRACE: i32 = 10;
pub const EXIT_STATE_UNLICENSED: i32 = 11;
pub const EXIT_STATE_EXPIRED: i32 = 12;
pub const EXIT_STATE_REVOKED: i32 = 13;

#[derive(Parser, Debug)]
#[command(name = "licagent", version, about = "License agent for PBX appliances")]
pub struct Cli {
    /// Config file [default: /etc/licagent/licagent.toml, if it exists]
    #[arg(long, global = true, env = "LICAGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory (database, device key); overrides paths.state_dir
    #[arg(long, global = true, env = "LICAGENT_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// API socket; overrides paths.socket
    #[arg(long, global = true, env = "LICAGENT_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (systemd starts this)
    Run,
    /// Show the license state, the PBX, seats and expiry; the exit code says the state
    Status {
        #[arg(long)]
        json: bool,
        /// Print only the state word (for scripts); the exit code is the same
        #[arg(long, conflicts_with = "json")]
        check: bool,
    },
    /// Verify a license file and install it through the daemon
    Import {
        /// The license file, or - for standard input
        file: PathBuf,
        /// Allow switching the box to another system, or replacing a full
        /// license with a trial or test one
        #[arg(long)]
        replace: bool,
        #[arg(long)]
        json: bool,
    },
    /// Activate this PBX with the key from the portal
    Activate {
        /// The PBX key (any case; spaces and dashes are fine), or - to read it from stdin
        #[arg(required = true, num_args = 1.., value_name = "KEY")]
        key: Vec<String>,
        /// Move the license from the box it is bound to onto this one (RMA)
        #[arg(long)]
        rehost: bool,
        #[arg(long)]
        json: bool,
    },
    /// Ask the portal for the current license now
    Refresh {
        #[arg(long)]
        json: bool,
    },
    /// Release this box's license at the portal (signed by its device key); the box becomes unlicensed
    Deactivate {
        #[arg(long)]
        json: bool,
    },
    /// Get this machine's trial license from the portal (once per machine, 3 months)
    Trial {
        /// Allow the trial to replace a full license installed here
        #[arg(long)]
        replace: bool,
        #[arg(long)]
        json: bool,
    },
    /// Test mode: everything unlocked, no seat limits, ends by itself (8 hours at most)
    TestMode {
        #[arg(value_parser = ["start", "stop", "status"])]
        action: String,
        #[arg(long)]
        json: bool,
    },
    /// Print an offline request code for a PBX without internet
    RequestCode {
        #[arg(required = true, num_args = 1.., value_name = "KEY")]
        key: Vec<String>,
    },
    /// The PBX's users: profiles, add-ons, bulk import, audit
    Users {
        #[command(subcommand)]
        cmd: users::UsersCmd,
    },
    /// Write the users, profiles and add-ons to FILE (- for stdout), for a replacement box
    Export { file: PathBuf },
    /// Load users from an export of the same system (onto a box without users); FILE or - for stdin
    Restore { file: PathBuf },
    /// Seats per profile and add-on: purchased, used, free, over
    Seats {
        #[arg(long)]
        json: bool,
    },
    /// Check a config file (default: --config) and exit 6 if it is bad; `systemctl reload` runs this first
    CheckConfig {
        /// The file to check instead of --config
        file: Option<PathBuf>,
    },
    /// Serve the Activation / Licenses page on 127.0.0.1 for a browser at the box or through an SSH tunnel; prints a one-time login code
    Ui {
        /// Address to listen on; loopback only unless --listen-public (port 0 picks a free port)
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: String,
        /// Allow an address other machines can reach (no TLS: the login travels in clear text)
        #[arg(long)]
        listen_public: bool,
        /// Write the address listened on to FILE (for scripts, with port 0)
        #[arg(long, value_name = "FILE")]
        addr_file: Option<PathBuf>,
    },
    /// Show this machine's hardware ID
    Hwid {
        #[arg(long)]
        json: bool,
        /// Compare this machine with the hardware a license file (or - for stdin) is bound to
        #[arg(long, value_name = "FILE")]
        explain: Option<PathBuf>,
        /// Read /sys, /etc and /proc under DIR (overrides hwid.root)
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

/// The command-line definition, for the man pages and completions that
/// `tools/gen` writes for the packages.
pub fn command() -> clap::Command {
    let long: &'static str = Box::leak(long_version().into_boxed_str());
    <Cli as clap::CommandFactory>::command().long_version(long)
}

/// `licagent --version`: the version on the first line (what scripts and the
/// package test read), then the build and what this build trusts.
pub fn long_version() -> String {
    let keys = crate::license::KeyRing::vendor().key_ids();
    format!(
        "{}\ncommit: {}\ntarget: {}\nprofile: {}\nschema: {}\nvendor keys: {}",
        env!("CARGO_PKG_VERSION"),
        env!("LICAGENT_COMMIT"),
        env!("LICAGENT_TARGET"),
        env!("LICAGENT_PROFILE"),
        crate::store::SCHEMA_VERSION,
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    )
}

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The error as a program reads it under `--json`: the daemon's code
    /// when it answered with one, else a code of the CLI's own.
    pub fn code(&self) -> String {
        let own = match self {
            CliError::Config(_) => "config_invalid",
            CliError::Client(ClientError::NotRunning(_)) => "not_running",
            CliError::Client(ClientError::SocketDenied(_) | ClientError::Forbidden(_)) => {
                "access_denied"
            }
            CliError::Client(ClientError::Refused { code: Some(c), .. }) => {
                return serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "refused".into());
            }
            CliError::Client(ClientError::Refused { .. }) | CliError::Refused(_) => "refused",
            CliError::Client(ClientError::Timeout) => "timeout",
            CliError::Client(ClientError::Protocol { .. }) | CliError::Failed(_) => "failed",
        };
        own.to_string()
    }

    /// `{"error": {"code", "message", "exit", "rows"?}}`, what `--json`
    /// prints on stdout for a failure.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "exit": self.exit_code(),
        });
        if let CliError::Client(ClientError::Refused { rows, .. }) = self {
            if !rows.is_empty() {
                error["rows"] = serde_json::to_value(rows).unwrap_or_default();
            }
        }
        serde_json::json!({ "error": error })
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => EXIT_CONFIG,
            CliError::Client(ClientError::NotRunning(_)) => EXIT_NOT_RUNNING,
            CliError::Client(ClientError::SocketDenied(_) | ClientError::Forbidden(_)) => {
                EXIT_DENIED
            }
            CliError::Client(ClientError::Refused { status, .. }) if status.is_client_error() => {
                EXIT_REFUSED
            }
            CliError::Refused(_) => EXIT_REFUSED,
            CliError::Client(_) | CliError::Failed(_) => EXIT_FAILURE,
        }
    }
}

/// Runs the CLI with `args` (including the program name); returns the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let json = wants_json(&args);
    let parsed = command()
        .try_get_matches_from(args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if json {
                // A script reading stdout gets the failure too, as JSON.
                println!("{}", e.to_json());
            }
            eprintln!("licagent: {e}");
            e.exit_code()
        }
    }
}

/// Whether `--json` was asked for (before any `--`).
fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

fn dispatch(cli: Cli) -> Result<i32, CliError> {
    if let Command::CheckConfig { file } = &cli.command {
        return check_config(file.as_deref().or(cli.config.as_deref())).map(|()| EXIT_OK);
    }
    let config = load_config(&cli)?;
    if let Command::Status { json, check } = cli.command {
        return status::run(&config, json, check);
    }
    dispatch_other(cli, config).map(|()| EXIT_OK)
}

fn dispatch_other(cli: Cli, config: Config) -> Result<(), CliError> {
    match cli.command {
        Command::Run => run::run(config, cli.config),
        Command::Status { .. } | Command::CheckConfig { .. } => Ok(()),
        Command::Import {
            file,
            replace,
            json,
        } => import::run(&config, &file, replace, json),
        Command::Activate { key, rehost, json } => activate::activate(&config, &key, rehost, json),
        Command::Refresh { json } => activate::refresh(&config, json),
        Command::RequestCode { key } => activate::request_code(&config, &key),
        Command::Users { cmd } => users::run(&config, cmd),
        Command::Seats { json } => users::seats(&config, json),
        Command::Export { file } => users::export(&config, &file),
        Command::Restore { file } => users::restore(&config, &file),
        Command::Trial { replace, json } => activate::trial(&config, replace, json),
        Command::Deactivate { json } => activate::deactivate(&config, json),
        Command::TestMode { action, json } => testmode::run(&config, &action, json),
        Command::Ui {
            listen,
            listen_public,
            addr_file,
        } => ui::run(&config, listen, listen_public, addr_file),
        Command::Hwid {
            json,
            explain,
            root,
        } => hwid::run(&config, json, explain.as_deref(), root),
    }
}

/// `licagent check-config [FILE]`, like `nginx -t`: everything the daemon
/// checks when it loads or reloads a config, without touching the daemon.
fn check_config(file: Option<&std::path::Path>) -> Result<(), CliError> {
    let shown = file.map_or(config::DEFAULT_CONFIG_PATH.to_string(), |f| {
        f.display().to_string()
    });
    let config = Config::load(Some(
        file.unwrap_or(std::path::Path::new(config::DEFAULT_CONFIG_PATH)),
    ))?;
    // The portal client reads ca_file and checks the pins.
    crate::portal::PortalClient::from_config(&config.portal)
        .map_err(|e| CliError::Config(ConfigError::Check(format!("{shown}: {e}"))))?;
    println!("{shown}: the configuration is valid");
    Ok(())
}

/// The config file, then flags and environment on top.
fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.state_dir {
        config.paths.state_dir = dir.clone();
    }
    if let Some(socket) = &cli.socket {
        config.paths.socket = socket.clone();
    }
    Ok(config)
}

/// A small runtime for one client call.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

fn client(config: &Config) -> Client {
    Client::new(&config.paths.socket)
}

/// A file's bytes, or standard input's for `-`.
fn read_input(file: &std::path::Path) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let result = if file == std::path::Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            CliError::Failed(format!("{} does not exist", file.display()))
        }
        _ => CliError::Failed(format!("cannot read {}: {e}", file.display())),
    })?;
    Ok(bytes)
}

/// The name to print for a file argument (`-` is standard input).
fn shown(file: &std::path::Path) -> String {
    if file == std::path::Path::new("-") {
        "standard input".to_string()
    } else {
        file.display().to_string()
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
