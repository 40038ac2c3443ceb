//! The `licagent` subcommands, one file each. Results go to stdout, one
//! sentence of diagnosis to stderr, and the exit code says what kind of
//! failure it was (docs/cli.md).

mod activate;
mod hwid;
mod import;
mod run;
mod status;
mod testmode;
mod users;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::{Client, ClientError};
use crate::config::{Config, ConfigError};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_RUNNING: i32 = 3;
pub const EXIT_DENIED: i32 = 4;
pub const EXIT_REFUSED: i32 = 5;
pub const EXIT_CONFIG: i32 = 6;

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
    /// Show the license state, the PBX, seats and expiry
    Status {
        #[arg(long)]
        json: bool,
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
    /// Write the users, profiles and add-ons to FILE, for a replacement box
    Export { file: PathBuf },
    /// Load users from an export of the same system (onto a box without users)
    Restore { file: PathBuf },
    /// Seats per profile and add-on: purchased, used, free, over
    Seats {
        #[arg(long)]
        json: bool,
    },
    /// Show this machine's hardware ID
    Hwid {
        #[arg(long)]
        json: bool,
        /// Compare this machine with the hardware a license file is bound to
        #[arg(long, value_name = "FILE")]
        explain: Option<PathBuf>,
        /// Read /sys, /etc and /proc under DIR (overrides hwid.root)
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
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
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    match dispatch(cli) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("licagent: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), CliError> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Run => run::run(config, cli.config),
        Command::Status { json } => status::run(&config, json),
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
        Command::Hwid {
            json,
            explain,
            root,
        } => hwid::run(&config, json, explain.as_deref(), root),
    }
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

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
