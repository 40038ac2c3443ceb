//! The CLI and the API as a script or a PBX uses them: exit codes by state,
//! errors as JSON on stdout under `--json`, `-` for standard input and
//! output, portal trouble as exit 1, the entitlement reasons, and the event
//! stream's resume after a reconnect.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::http::{self, Events};
use common::portal::Portal;
use common::*;
use serde_json::json;

struct Site {
    env: Env,
    portal: Portal,
    daemon: Daemon,
    serial: String,
}

fn site(seats: &str) -> Site {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("Script", seats);
    portal.serve();
    env.write_config_with_trust(&[&portal.trust_line], &portal.agent_config(true));
    let mut daemon = env.start();
    daemon.await_ready();
    let out = env.cli(&["activate", &pbx.key]);
    assert!(out.status.success(), "{}", stderr(&out));
    Site {
        env,
        portal,
        daemon,
        serial: pbx.serial,
    }
}

/// The CLI with `input` on its standard input.
fn cli_stdin(env: &Env, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = command(BIN);
    cmd.arg("--config")
        .arg(&env.config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut cmd);
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn status_exits_by_state_like_systemctl_is_active() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let out = env.cli(&["status"]);
    assert_eq!(out.status.code(), Some(11), "unlicensed: {}", stdout(&out));
    let out = env.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(11));
    assert_eq!(json(&out)["state"], "unlicensed");
    let out = env.cli(&["status", "--check"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(11), "unlicensed\n".into())
    );
    d.stop();

    let mut s = site("premium=2");
    let out = s.env.cli(&["status", "--check"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(0), "active\n".into())
    );
    s.portal
        .admin(&["pbx", "revoke", &s.serial, "--reason", "order cancelled"]);
    let out = s.env.cli(&["refresh"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = s.env.cli(&["status"]);
    assert_eq!(out.status.code(), Some(13), "revoked: {}", stdout(&out));
    // The portal answered with a verdict: no stale refresh error is shown.
    assert!(!stdout(&out).contains("Last error"), "{}", stdout(&out));
    s.daemon.stop();
}

#[test]
fn json_failures_go_to_stdout_with_their_code() {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    // No license: a change is refused with the daemon's code.
    let out = env.cli(&[
        "users",
        "add",
        "u1",
        "--name",
        "A",
        "--extension",
        "201",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["error"]["code"], "no_license");
    assert_eq!(v["error"]["exit"], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("license"));
    // The daemon is not running: the CLI's own code.
    d.stop();
    let out = env.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(json(&out)["error"]["code"], "not_running");
    // Without --json stdout stays empty.
    let out = env.cli(&["status"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn csv_rows_stdin_stdout_and_portal_trouble() {
    let mut s = site("premium=1,essential=5");
    let env = &s.env;
    // Bad rows: every one is in the JSON error on stdout.
    let bad = b"extension,number,name,profile\n,,Nobody,essential\n202,,Two,gold\n";
    let out = cli_stdin(env, &["users", "import", "-", "--json"], bad);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["error"]["code"], "csv_invalid");
    let rows = v["error"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(
        (rows[0]["line"].clone(), rows[1]["line"].clone()),
        (json!(2), json!(3))
    );
    assert!(
        stderr(&out).contains("standard input:2:"),
        "{}",
        stderr(&out)
    );

    // `-` is standard input for an import...
    let good = b"extension,number,name,profile\n201,,One,premium\n202,,Two,premium\n";
    let out = cli_stdin(env, &["users", "import", "-"], good);
    assert!(out.status.success(), "{}", stderr(&out));
    // ... and standard output for an export, which restores from stdin.
    let out = env.cli(&["export", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export = json(&out);
    assert_eq!(export["users"].as_array().unwrap().len(), 2);
    let out = cli_stdin(env, &["restore", "-"], &out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "a box with users: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("2 users already"), "{}", stderr(&out));

    // The second premium user has no seat; the reason says so.
    let v = json(&env.cli(&["users", "show", "202", "--extension", "--json"]));
    assert_eq!(
        (v["licensed"].clone(), v["reason"].clone()),
        (json!(false), json!("no_seat"))
    );

    // A portal that fails (HTTP 500) is trouble, exit 1, not a refusal.
    s.portal.fault("error500");
    let out = env.cli(&["refresh", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json(&out)["error"]["code"], "portal_unreachable");
    s.portal.fault("down");
    let out = env.cli(&["refresh"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    s.daemon.stop();
}

#[test]
fn box_reasons_reach_every_user_and_events_resume_after_a_reconnect() {
    let mut s = site("premium=5");
    let env = &s.env;
    let out = env.cli(&[
        "users",
        "add",
        "u1",
        "--name",
        "A",
        "--extension",
        "201",
        "--profile",
        "premium",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut ev = Events::open(&env.socket, "/v1/events", &[]);
    let snap = ev.next();
    assert_eq!(snap.event, "snapshot");
    let seq = snap.data["seq"].as_u64().unwrap();
    assert_eq!(snap.data["missed"], false);
    assert_eq!(snap.data["status"]["state"], "active");

    // A change while connected.
    let out = env.cli(&[
        "users",
        "add",
        "u2",
        "--name",
        "B",
        "--extension",
        "202",
        "--profile",
        "premium",
    ]);
    assert!(out.status.success());
    let last = loop {
        let e = ev.next();
        let id = e.id.expect("every change has an id");
        assert!(id > seq, "changes come after the snapshot");
        if e.event == "user" && e.data["id"] == "u2" {
            assert_eq!(e.data["licensed"], true);
            break id;
        }
    };
    drop(ev);

    // Changes while disconnected: the revocation takes every user's seat.
    s.portal
        .admin(&["pbx", "revoke", &s.serial, "--reason", "order cancelled"]);
    let _ = env.cli(&["refresh"]);
    let a = http::get(&env.socket, "/v1/entitlement?extension=201");
    let v = a.json();
    assert_eq!(
        (v["licensed"].clone(), v["reason"].clone()),
        (json!(false), json!("revoked"))
    );

    // Resume: the snapshot says nothing was missed, then the missed events.
    let last_id = last.to_string();
    let mut ev = Events::open(&env.socket, "/v1/events", &[("Last-Event-ID", &last_id)]);
    let snap = ev.next();
    assert_eq!(snap.data["missed"], false);
    let mut state_seen = false;
    let mut users_lost = 0;
    while !(state_seen && users_lost == 2) {
        let e = ev.next();
        assert!(e.id.unwrap() > last, "only events after the resume point");
        match e.event.as_str() {
            "state" => {
                assert_eq!(
                    (e.data["from"].clone(), e.data["to"].clone()),
                    (json!("active"), json!("revoked"))
                );
                state_seen = true;
            }
            "user" => {
                assert_eq!(e.data["reason"], "revoked");
                users_lost += 1;
            }
            _ => {}
        }
    }
    drop(ev);
    // A resume point from before a restart (numbers start anew) is told.
    let mut ev = Events::open(&env.socket, "/v1/events?since=999999", &[]);
    assert_eq!(ev.next().data["missed"], true);
    let a = http::get(&env.socket, "/v1/events?since=abc");
    assert_eq!((a.status, a.code()), (400, "bad_request".to_string()));
    s.daemon.stop();
}

/// `POST /v1/entitlements` is a read: a PBX process that is only in the
/// socket's group gets its batch answered (its body is kept, unlike a
/// change's from a reader, which the connection layer throws away).
#[test]
fn a_reader_may_send_a_batch_of_checks() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root to act as another user");
        return;
    }
    let mut s = site("premium=1");
    let out = s
        .env
        .cli(&["users", "add", "u1", "--name", "A", "--extension", "201"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A plain client as uid nobody: a raw request over the socket.
    let script = r#"
import socket, sys
body = b'{"extensions": ["201", "299"]}'
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"POST /v1/entitlements HTTP/1.1\r\nHost: licagent\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(script).arg(&s.env.socket);
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || drop_to(65534, &[]));
    }
    let out = run_with_timeout(cmd);
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}{}", stderr(&out));
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["results"][0]["entitlement"]["extension"], "201");
    assert_eq!(v["results"][1]["error"]["code"], "unknown_user");
    s.daemon.stop();
}
