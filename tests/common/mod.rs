//! Test environment: a temporary folder holding config, database and socket,
//! the real `licagent` binary started as a daemon with a fake systemd
//! notify socket, and licenses signed by a key made for the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod http;
pub mod portal;

use licagent::hwid::{self, Component};
use licagent::license::{
    self, Enforcement, LicenseKind, LicensePayload, SigningKey, Term, TermKind,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_licagent");

/// Every wait in these tests ends by itself.
pub const WAIT: Duration = Duration::from_secs(20);

/// A command that runs `bin`, behind the runner named in
/// `LICAGENT_TEST_RUNNER` when that is set (for example
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu`). Cargo's target runner emulates
/// the test binary itself, but an ARM binary that a test spawns cannot be
/// exec'd directly unless binfmt_misc is set up; `.cargo/config.toml` sets
/// this variable for the ARM targets.
pub fn command(bin: &str) -> Command {
    let runner = std::env::var("LICAGENT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hwid")
        .join(name)
}

/// A temporary folder with a config for one agent.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub key: SigningKey,
    /// The fixture tree the agent reads its hardware from.
    pub hw_root: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env::with_hardware("bare-metal")
    }

    pub fn with_hardware(fixture_name: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other uids (the unprivileged-caller test) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (key, _) = SigningKey::generate();
        let env = Env {
            config: dir.path().join("licagent.toml"),
            socket: dir.path().join("run/api.sock"),
            state_dir: dir.path().join("state"),
            hw_root: fixture(fixture_name),
            key,
            dir,
        };
        env.write_config("");
        env
    }

    pub fn trust_line(&self) -> String {
        let pk = self.key.public_key();
        format!("{} {}", pk.key_id(), pk.to_base64())
    }

    /// Writes the config; `extra` is appended (whole sections).
    pub fn write_config(&self, extra: &str) {
        self.write_config_with_trust(&[&self.trust_line()], extra);
    }

    pub fn write_config_with_trust(&self, keys: &[&str], extra: &str) {
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let text = format!(
            "version = 1\n\n[paths]\nstate_dir = {:?}\nsocket = {:?}\n\n[api]\nsocket_mode = \"0666\"\n\n[hwid]\nroot = {:?}\n\n[trust]\nkeys = [{}]\n\n[log]\nlevel = \"debug\"\n{extra}",
            self.state_dir,
            self.socket,
            self.hw_root,
            keys.join(", ")
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Adds `lines` to the config's [api] section.
    pub fn add_api_settings(&self, lines: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replacen("[api]\n", &format!("[api]\n{lines}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn db(&self) -> PathBuf {
        self.state_dir.join("licagent.db")
    }

    /// The components the agent will see.
    pub fn components(&self) -> Vec<Component> {
        hwid::collect(&self.hw_root).unwrap().components
    }

    /// A license for this agent's hardware, valid for a year.
    pub fn payload(&self) -> LicensePayload {
        payload_for(&self.components())
    }

    pub fn sign(&self, p: &LicensePayload) -> String {
        license::sign(p, &self.key)
    }

    /// Writes `text` to a file in the folder and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs the CLI with this env's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(args, None)
    }

    /// Runs the CLI as another uid (the tests run as root on CI).
    pub fn cli_as(&self, args: &[&str], uid: Option<u32>) -> Output {
        let mut cmd = match uid {
            // The build folder may sit under a home only root can enter:
            // another uid runs a copy from this test's own folder.
            Some(_) => command(self.bin_copy().to_str().unwrap()),
            None => command(BIN),
        };
        cmd.arg("--config").arg(&self.config).args(args);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        run_with_timeout(cmd)
    }

    /// Runs the CLI as `uid` with exactly the supplementary `groups`
    /// (primary group `uid` too), as a service with `SupplementaryGroups=`
    /// or a shell after `setpriv --groups` would.
    pub fn cli_with_groups(&self, args: &[&str], uid: u32, groups: &[u32]) -> Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = command(self.bin_copy().to_str().unwrap());
        cmd.arg("--config").arg(&self.config).args(args);
        let groups: Vec<libc::gid_t> = groups.to_vec();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || drop_to(uid, &groups));
        }
        run_with_timeout(cmd)
    }

    /// The licagent binary, copied into this env's folder (mode 0755).
    pub fn bin_copy(&self) -> PathBuf {
        let copy = self.dir.path().join("licagent-bin");
        if !copy.exists() {
            std::fs::copy(BIN, &copy).expect("copy the licagent binary");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        copy
    }

    pub fn start(&self) -> Daemon {
        Daemon::start(self, &[])
    }
}

pub fn payload_for(components: &[Component]) -> LicensePayload {
    let now = licagent::time::now();
    let mut seats = BTreeMap::new();
    seats.insert("premium".to_string(), 5);
    seats.insert("essential".to_string(), 10);
    let mut addons = BTreeMap::new();
    addons.insert("mobile".to_string(), 3);
    LicensePayload {
        format: license::payload::PAYLOAD_FORMAT,
        license_id: format!("LIC-TEST-{now}"),
        system_id: "SYS-TEST-0001".into(),
        pbx_name: "Main office".into(),
        hardware_id: hwid::hardware_id(components),
        hardware: components.to_vec(),
        kind: LicenseKind::Full,
        issued_at: now - 60,
        term: Term {
            kind: TermKind::Yearly,
            ends_at: Some(now + 365 * 86400),
        },
        refresh_due: Some(now + 86400),
        grace_secs: 14 * 86400,
        enforcement: Enforcement::Soft,
        seats,
        addons,
        catalog: LicensePayload::demo_catalog(),
        device_public_key: None,
        nonce: None,
        test_mode: None,
    }
}

/// Becomes `uid` (primary group `uid`) with exactly `groups`: for a test
/// process or a `pre_exec` hook running as root.
pub fn drop_to(uid: u32, groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: plain system calls on values owned here.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(uid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns `cmd`, retrying while the executable is busy: a binary just
/// copied (`bin_copy`) can still be open for writing in a child that
/// another test thread forked meanwhile (ETXTBSY until that child execs).
pub fn spawn(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// Runs a command to completion, killing it after [`WAIT`].
pub fn run_with_timeout(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd);
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "command timed out: {:?}\nstderr: {}",
                cmd,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses JSON stdout, with the whole output in the panic message.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): stdout {} stderr {}", stdout(o), stderr(o)))
}

/// The real daemon, with a notify socket standing in for systemd.
pub struct Daemon {
    pub child: Child,
    notify: UnixDatagram,
    notify_path: PathBuf,
    log: PathBuf,
    /// Every sd_notify message received so far.
    pub messages: Vec<String>,
}

impl Daemon {
    /// Starts `licagent run`; `env_vars` are added to its environment.
    pub fn start(env: &Env, env_vars: &[(&str, &str)]) -> Daemon {
        Daemon::start_cmd(env, env_vars, |c| c)
    }

    /// Wraps the daemon command in `sh -c 'VAR=$$ exec ...'`, so that VAR
    /// holds the daemon's own pid (LISTEN_PID, WATCHDOG_PID).
    pub fn with_own_pid(cmd: &mut Command, var: &str) {
        let prog = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("{var}=$$ exec \"$0\" \"$@\""))
            .arg(prog)
            .args(args);
        *cmd = sh;
    }

    /// Starts the daemon through `wrap`, which may change the command (a
    /// shell wrapper for LISTEN_PID, an extra fd).
    pub fn start_cmd(
        env: &Env,
        env_vars: &[(&str, &str)],
        wrap: impl FnOnce(&mut Command) -> &mut Command,
    ) -> Daemon {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let notify_path = env.dir.path().join(format!("notify-{n}.sock"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = env.dir.path().join("daemon.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = command(BIN);
        cmd.arg("--config").arg(&env.config).arg("run");
        // The wrapper may replace the command; environment and stdio go on
        // whatever it returns.
        let cmd = wrap(&mut cmd);
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env_vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn daemon");
        Daemon {
            child,
            notify,
            notify_path,
            log,
            messages: vec![],
        }
    }

    /// Waits until a notify message contains `needle`.
    pub fn await_message(&mut self, needle: &str) -> String {
        let start = Instant::now();
        if let Some(m) = self.messages.iter().find(|m| m.contains(needle)) {
            return m.clone();
        }
        let mut buf = vec![0u8; 4096];
        while start.elapsed() < WAIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited with {status} before {needle:?}; log:\n{}",
                    self.log()
                );
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.messages.push(m.clone());
                if m.contains(needle) {
                    return m;
                }
            }
        }
        panic!(
            "no {needle:?} from the daemon within {WAIT:?}; log:\n{}",
            self.log()
        );
    }

    pub fn await_ready(&mut self) {
        self.await_message("READY=1");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` at least `times` times.
    pub fn await_log(&self, needle: &str, times: usize) {
        let start = Instant::now();
        while self.log().matches(needle).count() < times {
            assert!(
                start.elapsed() < WAIT,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP and waits until the daemon says the reload is done.
    pub fn reload(&self) {
        let done = self.log().matches("config reloaded").count();
        self.signal(nix::sys::signal::Signal::SIGHUP);
        self.await_log("config reloaded", done + 1);
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM, then waits for the exit; `messages` then holds every
    /// notify message sent before it.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < WAIT,
                "daemon did not stop; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            self.messages
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.notify_path);
    }
}
