//! CLI hygiene: writing into a closed pipe (`licagent users list | head`)
//! ends quietly by SIGPIPE, as coreutils do, instead of panicking (exit
//! 101, or SIGABRT in the appliance build); an unknown log level is a
//! config error naming the key and the line.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use common::*;

fn into_closed_pipe(env: &Env, args: &[&str]) -> std::process::Output {
    let (read, write) = nix::unistd::pipe().unwrap();
    // The reader is gone before the first write, like `head` after its
    // first lines.
    drop(read);
    let mut cmd = command(BIN);
    cmd.arg("--config").arg(&env.config).args(args);
    cmd.stdout(Stdio::from(write));
    cmd.stderr(Stdio::piped()).stdin(Stdio::null());
    let child = spawn(&mut cmd);
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly_like_coreutils() {
    let env = Env::new();
    // Without the daemon: the hardware report.
    let out = into_closed_pipe(&env, &["hwid", "--json"]);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert_eq!(stderr(&out), "", "nothing said");

    // Through the daemon: status and the users list.
    let mut d = env.start();
    d.await_ready();
    for args in [&["status", "--json"][..], &["users", "list"][..]] {
        let out = into_closed_pipe(&env, args);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            out.status
        );
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    // A daemon error is still reported (SIGPIPE stays ignored for the
    // socket): a refused write says why.
    let out = env.cli(&["users", "remove", "nobody-here"]);
    assert!(!out.status.success());
    assert!(!stderr(&out).is_empty());
    d.stop();
}

#[test]
fn an_unknown_log_level_is_a_config_error_with_key_and_line() {
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace("level = \"debug\"", "level = \"warning\"");
    let line = text.lines().position(|l| l.contains("warning")).unwrap() + 1;
    std::fs::write(&env.config, text).unwrap();
    for args in [&["run"][..], &["status"][..]] {
        let out = env.cli(args);
        assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("line {line}: log.level = \"warning\"")),
            "{err}"
        );
    }
}
