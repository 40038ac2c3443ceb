//! The real `licportal`, initialised in a temporary folder and served over
//! TLS on 127.0.0.1 with port 0, with its admin commands and fault knobs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use super::{json, run_with_timeout, stderr, Env, WAIT};

/// `licportal` lives beside `licagent` in the target folder; a lone
/// `cargo test --test ...` may not have built it yet.
pub fn portal_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let bin = Path::new(super::BIN).with_file_name("licportal");
    BUILD.call_once(|| {
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "licportal"])
                .status()
                .expect("run cargo build -p licportal");
            assert!(status.success(), "cargo build -p licportal failed");
        }
    });
    bin
}

pub struct Portal {
    pub data: PathBuf,
    pub ca: PathBuf,
    /// "<key id> <base64>", for the agent's [trust] keys.
    pub trust_line: String,
    pub addr: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

/// A PBX as the portal printed it.
pub struct Pbx {
    pub key: String,
    pub serial: String,
}

impl Portal {
    /// `licportal init` in `dir/portal`, with short refresh and grace times.
    pub fn init(dir: &Path) -> Portal {
        let data = dir.join("portal");
        let mut p = Portal {
            ca: data.join("ca.pem"),
            log: dir.join("portal.log"),
            data,
            trust_line: String::new(),
            addr: None,
            child: None,
        };
        let out = p.admin(&["init", "--names", "localhost,127.0.0.1", "--json"]);
        let v = json(&out);
        p.trust_line = format!(
            "{} {}",
            v["key_id"].as_str().unwrap(),
            v["public_key"].as_str().unwrap()
        );
        p.admin(&["customer", "add", "Acme"]);
        p
    }

    /// Runs an admin command; it must succeed.
    pub fn admin(&self, args: &[&str]) -> Output {
        let out = self.try_admin(args);
        assert!(
            out.status.success(),
            "licportal {args:?} failed: {}",
            stderr(&out)
        );
        out
    }

    pub fn try_admin(&self, args: &[&str]) -> Output {
        let mut cmd = super::command(portal_bin().to_str().unwrap());
        cmd.arg("--data").arg(&self.data).args(args);
        run_with_timeout(cmd)
    }

    pub fn add_pbx(&self, name: &str, seats: &str) -> Pbx {
        self.add_pbx_with(name, seats, &["--addons", "mobile=3"])
    }

    /// A PBX with extra `pbx add` options (`--enforcement hard`, `--addons`).
    pub fn add_pbx_with(&self, name: &str, seats: &str, extra: &[&str]) -> Pbx {
        let mut args = vec![
            "pbx",
            "add",
            "--customer",
            "Acme",
            "--name",
            name,
            "--term",
            "yearly",
            "--seats",
            seats,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.admin(&args);
        let v = json(&out);
        Pbx {
            key: v["key"].as_str().unwrap().to_string(),
            serial: v["serial"].as_str().unwrap().to_string(),
        }
    }

    pub fn fault(&self, mode: &str) {
        self.admin(&["fault", "set", mode]);
    }

    /// Serves on `listen` ("127.0.0.1:0" for a new port) and waits for
    /// the address file.
    pub fn serve_on(&mut self, listen: &str) {
        let addr_file = self.data.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = super::command(portal_bin().to_str().unwrap())
            .arg("--data")
            .arg(&self.data)
            .args(["serve", "--listen", listen, "--addr-file"])
            .arg(&addr_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn licportal");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if !a.trim().is_empty() {
                    self.addr = Some(a.trim().to_string());
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("licportal exited with {status}; log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < WAIT,
                "licportal did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn serve(&mut self) {
        self.serve_on("127.0.0.1:0");
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr.as_ref().expect("portal not served"))
    }

    /// Stops the server (the address stays known, to serve there again).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > WAIT {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `[portal]` and `[refresh]` config sections for an agent; fast
    /// retries so the tests move.
    pub fn agent_config(&self, ca: bool) -> String {
        let ca = if ca {
            format!("ca_file = {:?}\n", self.ca)
        } else {
            String::new()
        };
        format!(
            "\n[portal]\nurl = {:?}\n{ca}timeout_secs = 2\n\n[refresh]\nretry_min_secs = 1\nretry_max_secs = 2\njitter_secs = 0\n",
            self.url()
        )
    }

    /// Points `env`'s agent at this portal, trusting its key and CA.
    pub fn configure(&self, env: &Env) {
        env.write_config_with_trust(&[&self.trust_line], &self.agent_config(true));
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
