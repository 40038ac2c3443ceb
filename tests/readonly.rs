//! Start-up guards with the real daemon: a read-only state directory still
//! serves every read (the verdict above all) and refuses writes with a
//! sentence naming the file system; a second daemon on the same state
//! directory is refused before it does anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A read-only bind mount of a folder onto itself, undone on drop.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    /// `None` when this machine does not allow mounts (not root, or a
    /// container without CAP_SYS_ADMIN): the test then says it skipped.
    fn new(dir: &Path) -> Option<ReadOnlyMount> {
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let d = dir.to_str().unwrap();
        if !ok(&["--bind", d, d]) {
            return None;
        }
        let m = ReadOnlyMount(dir.to_path_buf());
        if !ok(&["-o", "remount,bind,ro", d, d]) {
            return None;
        }
        Some(m)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn add_user(env: &Env, id: &str, ext: &str) -> std::process::Output {
    env.cli(&["users", "add", id, "--name", id, "--extension", ext])
}

#[test]
fn a_read_only_state_directory_serves_reads_and_refuses_writes() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let file = env.file("good.lic", &env.sign(&env.payload()));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    assert!(add_user(&env, "ann", "201").status.success());
    // A clean stop: no -wal or -shm is left for the read-only open to use.
    assert!(d.stop().success());
    assert!(!env.state_dir.join("licagent.db-wal").exists());

    let Some(mount) = ReadOnlyMount::new(&env.state_dir) else {
        eprintln!("SKIPPED: cannot mount here (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let mut d = env.start();
    d.await_ready();
    let st = json(&env.cli(&["status", "--json"]));
    assert_eq!(st["state"], "active", "{st}");
    let out = env.cli(&["users", "show", "ann", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["licensed"], true);
    let out = env.cli(&["seats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = add_user(&env, "bob", "202");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is on a read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(env.state_dir.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    // A program tells it by the code: the box serves reads, not changes.
    let out = env.cli(&[
        "users",
        "add",
        "bob",
        "--name",
        "B",
        "--extension",
        "202",
        "--json",
    ]);
    assert_eq!(json(&out)["error"]["code"], "read_only", "{}", stdout(&out));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("read-only file system"),
        "{}",
        stderr(&out)
    );
    // Said once at start, not at every tick or refusal.
    assert_eq!(
        d.log()
            .matches("the state directory is on a read-only file system")
            .count(),
        1,
        "{}",
        d.log()
    );
    assert!(d.stop().success());
    drop(mount);

    // Writable again: everything as before, bob never got in.
    let mut d = env.start();
    d.await_ready();
    assert!(!env.cli(&["users", "show", "bob"]).status.success());
    assert!(add_user(&env, "bob", "202").status.success());
    d.stop();
}

/// Killed (its -wal and -shm left behind), then read-only: the last
/// committed write is still served.
#[test]
fn a_killed_daemon_on_a_read_only_directory_serves_its_last_commit() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let file = env.file("good.lic", &env.sign(&env.payload()));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    assert!(add_user(&env, "ann", "201").status.success());
    d.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = d.child.wait();
    let Some(_mount) = ReadOnlyMount::new(&env.state_dir) else {
        eprintln!("SKIPPED: cannot mount here (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let mut d = env.start();
    d.await_ready();
    assert_eq!(json(&env.cli(&["status", "--json"]))["state"], "active");
    let out = env.cli(&["users", "show", "ann", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.stop();
}

#[test]
fn a_second_daemon_is_refused_before_it_does_anything() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let mut cmd = command(BIN);
    cmd.arg("--config").arg(&env.config).arg("run");
    let out = run_with_timeout(cmd);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("another licagent"), "{err}");
    assert!(err.contains(&format!("pid {}", d.child.id())), "{err}");
    assert!(err.contains(env.socket.to_str().unwrap()), "{err}");
    // Nothing of start-up ran: the error (logged, then printed) is all it
    // said.
    assert!(
        err.trim().lines().all(|l| l.contains("another licagent")),
        "{err}"
    );
    // The first one is untouched (and answers: 11 is "unlicensed").
    assert_eq!(env.cli(&["status"]).status.code(), Some(11));
    d.stop();
}
