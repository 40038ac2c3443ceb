//! The real `licagent run` in a temporary folder: start, import, restart,
//! refusals, authorization, systemd notify, reload and socket activation.

mod common;

use common::*;

#[test]
fn import_survives_restart_and_status_shows_seats() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();

    let st = json(&env.cli(&["status", "--json"]));
    assert_eq!(st["state"], "unlicensed");
    assert_eq!(st["licensed"], false);
    assert!(st["license"].is_null());

    let payload = env.payload();
    let file = env.file("good.lic", &env.sign(&payload));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("License installed"),
        "{}",
        stdout(&out)
    );

    let st = json(&env.cli(&["status", "--json"]));
    assert_eq!(st["state"], "active");
    assert_eq!(st["license"]["system_id"], "SYS-TEST-0001");
    assert_eq!(st["license"]["seats"]["premium"]["purchased"], 5);
    assert_eq!(st["license"]["seats"]["essential"]["purchased"], 10);
    assert_eq!(st["license"]["hardware_match"], "match");
    assert_eq!(st["hardware_id"], payload.hardware_id.as_str());

    assert!(d.stop().success(), "log:\n{}", d.log());
    assert!(
        d.messages.iter().any(|m| m.contains("STOPPING=1")),
        "{:?}",
        d.messages
    );
    assert!(
        !env.socket.exists(),
        "the daemon removes the socket it created"
    );

    // Same state after a restart, read from SQLite without any network.
    let mut d = env.start();
    d.await_ready();
    assert!(
        d.messages
            .iter()
            .any(|m| m.contains("STATUS=active: Main office (SYS-TEST-0001)")),
        "{:?}",
        d.messages
    );
    let st2 = json(&env.cli(&["status", "--json"]));
    assert_eq!(st2["state"], "active");
    assert_eq!(st2["license"], st["license"]);

    let human = stdout(&env.cli(&["status"]));
    assert!(human.contains("State:        active"), "{human}");
    assert!(human.contains("premium 0/5"), "{human}");
    assert!(d.stop().success());
}

#[test]
fn tampered_foreign_and_expired_files_are_refused_and_nothing_changes() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let good = env.file("good.lic", &env.sign(&env.payload()));
    assert!(env
        .cli(&["import", good.to_str().unwrap()])
        .status
        .success());
    let before = json(&env.cli(&["status", "--json"]));

    // One byte of the payload changed: the base64 stays valid.
    let text = env.sign(&env.payload());
    let lines: Vec<&str> = text.lines().collect();
    let body = lines.iter().position(|l| l.is_empty()).unwrap() + 1;
    let mut tampered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let first = tampered[body].clone();
    let flipped = if first.starts_with('e') { "f" } else { "e" };
    tampered[body] = format!("{flipped}{}", &first[1..]);
    let bad = env.file("tampered.lic", &(tampered.join("\n") + "\n"));
    let out = env.cli(&["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signature is not valid"),
        "{}",
        stderr(&out)
    );

    // Signed correctly, but for the NIC-swapped-and-more box of another site.
    let other = hwid_components("container");
    let foreign = env.file("foreign.lic", &env.sign(&payload_for(&other)));
    let out = env.cli(&["import", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("issued for another machine"),
        "{}",
        stderr(&out)
    );

    // Expired term.
    let mut p = env.payload();
    p.term.ends_at = Some(licagent::time::now() - 10);
    let expired = env.file("expired.lic", &env.sign(&p));
    let out = env.cli(&["import", expired.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Signed by a key nobody trusts.
    let (stranger, _) = licagent::license::SigningKey::generate();
    let unknown = env.file(
        "unknown.lic",
        &licagent::license::sign(&env.payload(), &stranger),
    );
    let out = env.cli(&["import", unknown.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("unknown key"), "{}", stderr(&out));

    // Not a license at all: caught locally.
    let junk = env.file("junk.txt", "hello\n");
    let out = env.cli(&["import", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("not a license file"),
        "{}",
        stderr(&out)
    );

    // An older license of the same system does not replace a newer one.
    let mut old = env.payload();
    old.issued_at -= 3600;
    old.license_id = "LIC-OLDER".into();
    let older = env.file("older.lic", &env.sign(&old));
    let out = env.cli(&["import", older.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("older than the installed license"),
        "{}",
        stderr(&out)
    );

    let after = json(&env.cli(&["status", "--json"]));
    // Everything but what moves with time itself (the clock, the seconds
    // to the next step): slow runners (qemu) cross a second in between.
    let steady = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("clock");
        if let Some(next) = v["next"].as_object_mut() {
            next.remove("in_secs");
        }
        v
    };
    assert_eq!(
        steady(before),
        steady(after),
        "a refused import changes nothing"
    );
    assert!(
        d.log().contains("license import refused"),
        "refusals are logged"
    );
    d.stop();
}

fn hwid_components(fixture_name: &str) -> Vec<licagent::hwid::Component> {
    licagent::hwid::collect(&fixture(fixture_name))
        .unwrap()
        .components
}

#[test]
fn unprivileged_caller_may_read_but_not_import() {
    if !nix::unistd::Uid::effective().is_root() {
        // Switching to another uid needs root; CI runs as root.
        eprintln!("SKIPPED: needs root to run the CLI as another user");
        return;
    }
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let nobody = 65534;
    let out = env.cli_as(&["status", "--json"], Some(nobody));
    // Reads are open; the exit code is the state's (11: unlicensed).
    assert_eq!(
        out.status.code(),
        Some(11),
        "reads are open: {}",
        stderr(&out)
    );
    assert_eq!(json(&out)["state"], "unlicensed");

    let file = env.file("good.lic", &env.sign(&env.payload()));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = env.cli_as(&["import", file.to_str().unwrap()], Some(nobody));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("access denied"), "{}", stderr(&out));
    assert!(
        d.log().contains("uid=65534"),
        "the refusal is logged:\n{}",
        d.log()
    );
    assert_eq!(json(&env.cli(&["status", "--json"]))["state"], "unlicensed");

    // Root may.
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    d.stop();
}

#[test]
fn cli_says_when_the_daemon_is_not_running() {
    let env = Env::new();
    let out = env.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("the daemon is not running"), "{err}");
    assert!(err.contains(env.socket.to_str().unwrap()), "{err}");
}

#[test]
fn bad_config_is_refused_with_key_and_line() {
    let env = Env::new();
    env.write_config("\n[portal]\nurll = \"https://x\"\n");
    let out = env.cli(&["run"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("urll"), "{err}");
    assert!(err.contains("line "), "{err}");

    let out = env.cli_missing_config();
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

trait MissingConfig {
    fn cli_missing_config(&self) -> std::process::Output;
}

impl MissingConfig for Env {
    fn cli_missing_config(&self) -> std::process::Output {
        let mut cmd = command(BIN);
        cmd.arg("--config")
            .arg(self.dir.path().join("nope.toml"))
            .arg("status");
        run_with_timeout(cmd)
    }
}

#[test]
fn watchdog_pings_and_status_reach_systemd() {
    let env = Env::new();
    let mut d = Daemon::start_cmd(&env, &[("WATCHDOG_USEC", "400000")], |c| {
        Daemon::with_own_pid(c, "WATCHDOG_PID");
        c
    });
    d.await_ready();
    assert!(
        d.messages.iter().any(|m| m.contains("STATUS=unlicensed")),
        "{:?}",
        d.messages
    );
    // At 0.4 s the daemon pings every 0.2 s.
    d.await_message("WATCHDOG=1");
    let st = d.stop();
    assert!(st.success());
}

#[test]
fn sighup_reloads_trust_keys() {
    let env = Env::new();
    // Start trusting nobody.
    env.write_config_with_trust(&[], "");
    let mut d = env.start();
    d.await_ready();
    let file = env.file("good.lic", &env.sign(&env.payload()));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert!(stderr(&out).contains("unknown key"), "{}", stderr(&out));

    env.write_config("");
    d.reload();
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A broken config on reload keeps the running one.
    std::fs::write(&env.config, "version = 1\nbogus = 1\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.await_log("was not reloaded", 1);
    // The daemon still runs on the old config; the CLI needs a good one.
    env.write_config("");
    assert_eq!(json(&env.cli(&["status", "--json"]))["state"], "active");
    d.stop();
}

#[test]
fn corrupt_database_is_moved_aside_and_the_agent_starts_unlicensed() {
    let env = Env::new();
    std::fs::create_dir_all(&env.state_dir).unwrap();
    std::fs::write(env.db(), vec![0x5au8; 16384]).unwrap();
    let mut d = env.start();
    d.await_ready();
    let st = json(&env.cli(&["status", "--json"]));
    assert_eq!(st["state"], "unlicensed");
    assert!(d.log().contains("moved aside"), "log:\n{}", d.log());
    let aside = std::fs::read_dir(&env.state_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside, "the corrupt file is kept for inspection");
    // And the fresh database takes a license.
    let file = env.file("good.lic", &env.sign(&env.payload()));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    d.stop();
}

#[test]
fn socket_passed_by_systemd_is_used_and_not_unlinked() {
    use std::os::fd::AsRawFd;
    let env = Env::new();
    std::fs::create_dir_all(env.socket.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&env.socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut d = Daemon::start_cmd(&env, &[("LISTEN_FDS", "1")], |c| {
        use std::os::unix::process::CommandExt;
        Daemon::with_own_pid(c, "LISTEN_PID");
        // SAFETY: dup2 is async-signal-safe; fd 3 is where systemd puts the
        // first socket.
        unsafe {
            c.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec; clear it then.
                let r = if fd == 3 {
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    });
    d.await_ready();
    assert!(d.log().contains("passed by systemd"), "log:\n{}", d.log());
    let st = json(&env.cli(&["status", "--json"]));
    assert_eq!(st["state"], "unlicensed");
    assert!(d.stop().success());
    assert!(env.socket.exists(), "a socket owned by systemd must stay");
    drop(listener);
}

#[test]
fn hwid_explain_tells_what_changed() {
    let env = Env::new();
    let bound = env.sign(&env.payload());
    let file = env.file("bound.lic", &bound);

    let out = env.cli(&["hwid", "--json"]);
    let v = json(&out);
    assert_eq!(v["hardware_id"], env.payload().hardware_id.as_str());
    assert_eq!(
        json(&env.cli(&["hwid", "--json"])),
        v,
        "same machine, same ID"
    );

    let swapped = fixture("nic-swapped");
    let out = env.cli(&[
        "hwid",
        "--explain",
        file.to_str().unwrap(),
        "--root",
        swapped.to_str().unwrap(),
        "--json",
    ]);
    let e = json(&out);
    assert_eq!(e["verdict"], "partial");
    assert_eq!(e["signature_verified"], true);
    assert_eq!(e["missing"][0]["kind"], "mac");
    assert_eq!(e["added"][0]["kind"], "mac");

    let out = env.cli(&[
        "hwid",
        "--explain",
        file.to_str().unwrap(),
        "--root",
        swapped.to_str().unwrap(),
    ]);
    assert!(stdout(&out).contains("partial"), "{}", stdout(&out));

    let container = fixture("container");
    let out = env.cli(&[
        "hwid",
        "--explain",
        file.to_str().unwrap(),
        "--root",
        container.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json(&out)["verdict"], "mismatch");
}
