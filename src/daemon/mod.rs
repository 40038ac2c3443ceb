//! The daemon runtime (`licagent run`): start-up, the API socket (bound or
//! passed by systemd), sd_notify READY/STATUS/WATCHDOG, the timer that moves
//! the license through time, SIGHUP reload and SIGTERM shutdown.

pub mod agent;
pub mod device;
pub mod link;
mod listen;
pub mod lock;
pub mod logging;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::auth::Policy;
use crate::api::server::Shared;
use crate::config::Config;

pub use agent::{Agent, AgentError};
pub use logging::init as init_logging;

/// The longest the timer sleeps. Deadlines are in trusted time, which runs
/// with the monotonic clock the timer sleeps on, so a wall clock step needs
/// no earlier wake-up; this only bounds how stale the saved time can get.
const MAX_TICK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error("{0}")]
    Listen(String),
    #[error("{0}")]
    DeviceKey(#[from] device::DeviceKeyError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    // Before anything else: a second daemon must not run start-up at all.
    let _lock = lock::acquire(&config.paths.state_dir, &config.paths.socket)
        .map_err(DaemonError::Listen)?;
    // systemd's variables are read (and unset, so that no child inherits
    // them) before any thread exists.
    let passed = listen::take_passed_socket().map_err(DaemonError::Listen)?;
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(true, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run_async(config, config_path, passed, watchdog))
}

async fn run_async(
    config: Config,
    config_path: Option<PathBuf>,
    passed: Option<std::os::unix::net::UnixListener>,
    watchdog: Option<Duration>,
) -> Result<(), DaemonError> {
    // Signals first: a SIGTERM that arrives once the socket answers (a
    // client saw the daemon up) must stop it cleanly, not kill it.
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Listen(e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| DaemonError::Listen(e.to_string()))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| DaemonError::Listen(e.to_string()))?;
    let agent = Arc::new(Agent::open(&config)?);
    let device = device::load_or_create(&config.paths.state_dir)?;
    let link = Arc::new(link::Link::new(&config, device));
    let socket = listen::Socket::open(&config, passed).map_err(DaemonError::Listen)?;
    let shared = Arc::new(Shared {
        agent: agent.clone(),
        link: link.clone(),
        config: RwLock::new(config.clone()),
        policy: RwLock::new(Policy::new(&config.api.admin_group)),
        events: Arc::new(crate::api::events::Events::new()),
    });
    // The baseline that later changes are compared with.
    agent.publish_changes(&shared.events);
    let (stop_tx, stop_rx) = watch::channel(false);
    let listen::Socket {
        listener,
        file: socket,
    } = socket;
    let server = tokio::spawn(crate::api::serve(listener, shared.clone(), stop_rx));

    info!(socket = %socket.path.display(), "licagent ready");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(&agent)),
    ]);

    // The watchdog is pinged at half its period from the main loop, so a
    // wedged loop stops the pings and systemd restarts the service.
    let mut watchdog_timer = watchdog.map(|d| tokio::time::interval(d / 2));
    let mut config = config;
    let refreshing = Arc::new(AtomicBool::new(false));
    loop {
        // Sleep until the next deadline to the millisecond (refresh due,
        // grace end, term end, test mode end, the planned refresh), or
        // until something changes one (`agent.changed()`).
        let now_ms = agent.now_ms();
        // While a refresh runs, its end wakes the loop (`agent.wake()`).
        let next_refresh = link
            .next_refresh_at(&agent)
            .filter(|_| !refreshing.load(Ordering::SeqCst))
            .map(|at| at.saturating_mul(1000) - now_ms);
        let sleep = [agent.next_deadline_ms(), next_refresh]
            .into_iter()
            .flatten()
            .min()
            .map(|ms| Duration::from_millis(ms.max(0) as u64))
            .unwrap_or(MAX_TICK)
            .min(MAX_TICK);
        tokio::select! {
            _ = agent.changed() => continue,
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                config = reload(config, config_path.as_deref(), &agent, &shared);
                notify(&[NotifyState::Status(&status_line(&agent))]);
            }
            _ = tick(&mut watchdog_timer) => {
                notify(&[NotifyState::Watchdog]);
            }
            _ = tokio::time::sleep(sleep) => {
                let before = agent.state();
                if agent.tick() != before {
                    notify(&[NotifyState::Status(&status_line(&agent))]);
                }
                agent.publish_changes(&shared.events);
                let due = link.next_refresh_at(&agent).is_some_and(|at| at <= agent.now());
                if due && !refreshing.swap(true, Ordering::SeqCst) {
                    // In its own task: a slow portal never holds up the
                    // watchdog or the timers.
                    let (agent, link, flag) = (agent.clone(), link.clone(), refreshing.clone());
                    let events = shared.events.clone();
                    tokio::spawn(async move {
                        let _ = link.refresh(&agent).await;
                        agent.publish_changes(&events);
                        flag.store(false, Ordering::SeqCst);
                        // Re-plan with the flag down: the retry after a
                        // failure is due in seconds, not at the next tick.
                        agent.wake();
                        notify(&[NotifyState::Status(&status_line(&agent))]);
                    });
                }
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    socket.cleanup();
    info!("licagent stopped");
    Ok(())
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Re-reads the config; on error keeps the running one and says so.
fn reload(old: Config, path: Option<&Path>, agent: &Agent, shared: &Shared) -> Config {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("SIGHUP: the config was not reloaded, the running one stays: {e}");
            return old;
        }
    };
    if new.paths != old.paths
        || new.api.socket_mode != old.api.socket_mode
        || new.api.socket_group != old.api.socket_group
    {
        warn!("SIGHUP: path and socket settings change only on restart");
    }
    if let Err(e) = logging::set_level(&new.log.level) {
        warn!("SIGHUP: log level not changed: {e}");
    }
    *shared.policy.write().unwrap_or_else(|p| p.into_inner()) = Policy::new(&new.api.admin_group);
    match new.key_ring() {
        Ok(ring) => {
            if let Err(e) = agent.set_key_ring(ring) {
                error!("SIGHUP: re-checking the license failed: {e}");
            }
        }
        Err(e) => error!("SIGHUP: trust keys not changed: {e}"),
    }
    shared.link.reconfigure(&new);
    *shared.config.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
    // Said last: everything above is in force when this line is logged.
    info!("SIGHUP: config reloaded");
    new
}

fn status_line(agent: &Agent) -> String {
    let s = agent.status();
    let word = agent::state_word(s.state);
    match (&s.license, &s.reason) {
        (Some(l), _) if s.licensed => format!("{word}: {} ({})", l.pbx_name, l.system_id),
        (_, Some(r)) => format!("{word}: {r}"),
        _ => word.to_string(),
    }
}

/// sd_notify when under systemd; a no-op otherwise.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("sd_notify failed: {e}");
    }
}
