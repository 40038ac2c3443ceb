//! Seat accounting through the real daemon and portal: bulk import of 1,000
//! users, seats changed on the portal arriving by refresh, soft over-use
//! flagged (with the notice hook), hard enforcement refusing, the same
//! holders after a restart, the audit, and authorization.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::portal::Portal;
use common::*;

struct Site {
    env: Env,
    portal: Portal,
    daemon: Daemon,
    serial: String,
}

/// An activated agent on a PBX with `seats` and `extra` pbx options; the
/// notice hook writes its argument to `hook.out` in the folder.
fn site(seats: &str, extra: &[&str]) -> Site {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx_with("Seats", seats, extra);
    portal.serve();
    let hook = env.dir.path().join("hook.sh");
    let out = env.dir.path().join("hook.out");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\nprintf '%s\\n' \"$1\" >> {out:?}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = format!(
        "{}\n[seats]\nnotice_hook = {hook:?}\n",
        portal.agent_config(true)
    );
    env.write_config_with_trust(&[&portal.trust_line], &cfg);
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

/// Creates users (id, extension) with the default profile.
fn add_users(env: &Env, users: &[(&str, &str)]) {
    for (id, ext) in users {
        let out = env.cli(&["users", "add", id, "--name", id, "--extension", ext]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn seats(env: &Env) -> serde_json::Value {
    json(&env.cli(&["status", "--json"]))["license"]["seats"].clone()
}

fn csv_of(rows: usize, profile_of: impl Fn(usize) -> &'static str) -> String {
    let mut s = String::from("extension,number,name,profile,mobile\n");
    for i in 0..rows {
        let ext = 1000 + i;
        writeln!(
            s,
            "{ext},+41 44 555 {ext},\"User {i}, Test\",{},0",
            profile_of(i)
        )
        .unwrap();
    }
    s
}

fn unlicensed(env: &Env) -> Vec<String> {
    let out = env.cli(&["users", "list", "--unlicensed", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut ids: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn thousand_users_soft_overuse_after_a_smaller_order_and_stable_holders() {
    let mut s = site("premium=10,essential=1000", &[]);
    let env = &s.env;
    let csv = env.file(
        "users.csv",
        &csv_of(1000, |i| if i < 10 { "premium" } else { "essential" }),
    );

    // Dry run: the numbers, and nothing changes.
    let out = env.cli(&[
        "users",
        "import",
        csv.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let preview = json(&out);
    assert_eq!(preview["created"], 1000);
    assert_eq!(
        json(&env.cli(&["users", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let out = env.cli(&["users", "import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = seats(env);
    assert_eq!(st["essential"]["used"], 990);
    assert_eq!(st["essential"]["available"], 10);
    assert_eq!(st["premium"]["used"], 10);
    assert!(unlicensed(env).is_empty());

    // The order shrinks on the portal; the refresh brings it, no restart.
    s.portal.admin(&[
        "pbx",
        "edit",
        &s.serial,
        "--seats",
        "premium=10,essential=900",
    ]);
    assert!(env.cli(&["refresh"]).status.success());
    let st = seats(env);
    assert_eq!(st["essential"]["purchased"], 900);
    assert_eq!(st["essential"]["over"], 90);
    // The latest 90 assignments lose their seat: the last 90 rows.
    let expected: Vec<String> = (1910..2000).map(|e| e.to_string()).collect();
    let lost = unlicensed(env);
    assert_eq!(lost, expected);
    let u = json(&env.cli(&["users", "show", "1999", "--json"]));
    assert_eq!(u["licensed"], false);
    assert_eq!(u["missing"], serde_json::json!(["essential"]));

    // Logged once, and the hook told.
    let start = Instant::now();
    let hook_out = env.dir.path().join("hook.out");
    while !hook_out.exists() {
        assert!(start.elapsed() < WAIT, "the notice hook did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let told = std::fs::read_to_string(&hook_out).unwrap();
    assert!(
        told.contains("\"essential\"") && told.contains("\"used\":990"),
        "{told}"
    );
    assert_eq!(
        s.daemon.log().matches("over-use: 990 users hold").count(),
        1
    );

    // Seats in use reached the portal with the refresh.
    assert!(env.cli(&["refresh"]).status.success());
    let shown = json(&s.portal.admin(&["pbx", "show", &s.serial, "--json"]));
    assert_eq!(shown["seats_in_use"]["essential"], 990);

    // A restart hands the seats to the same users.
    s.daemon.stop();
    let mut d = env.start();
    d.await_ready();
    assert_eq!(unlicensed(env), expected);
    d.stop();
}

#[test]
fn hard_enforcement_refuses_and_the_audit_names_who_took_the_last_seat() {
    let mut s = site(
        "premium=2,essential=5",
        &["--enforcement", "hard", "--addons", "mobile=1"],
    );
    let env = &s.env;
    add_users(env, &[("ann", "201"), ("bob", "202"), ("cid", "203")]);
    // New users got the default profile.
    assert_eq!(
        json(&env.cli(&["users", "show", "ann", "--json"]))["profile"]["code"],
        "essential"
    );

    assert!(env
        .cli(&["users", "assign", "ann", "premium"])
        .status
        .success());
    assert!(env
        .cli(&["users", "assign", "bob", "premium"])
        .status
        .success());
    let out = env.cli(&["users", "assign", "cid", "premium"]);
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(
        err.contains("Premium") && err.contains("2 bought, 2 in use"),
        "{err}"
    );
    assert_eq!(
        json(&env.cli(&["users", "show", "cid", "--json"]))["profile"]["code"],
        "essential"
    );

    // Add-ons: one mobile bought.
    assert!(env
        .cli(&["users", "addon", "add", "ann", "mobile"])
        .status
        .success());
    let out = env.cli(&["users", "addon", "add", "bob", "mobile"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = env.cli(&["users", "addon", "add", "bob", "nosuch"]);
    assert!(
        stderr(&out).contains("no add-on 'nosuch'"),
        "{}",
        stderr(&out)
    );
    let out = env.cli(&["users", "assign", "nobody", "premium"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        stderr(&out).contains("no user 'nobody'"),
        "{}",
        stderr(&out)
    );
    let out = env.cli(&["users", "add", "dup", "--name", "Dup", "--extension", "201"]);
    assert!(stderr(&out).contains("extension 201"), "{}", stderr(&out));

    // Who took the last Premium seat?
    let out = env.cli(&["users", "audit", "--code", "premium", "--json"]);
    let rows = json(&out);
    // Newest first; the newest assignment of Premium is the last seat taken.
    let last = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "assign")
        .unwrap();
    assert_eq!(last["user_id"], "bob");
    assert_eq!(last["action"], "assign");
    assert_eq!(last["caller_uid"], nix::unistd::Uid::effective().as_raw());
    assert_eq!(last["totals"]["premium"]["used"], 2);

    // Seat summary for the PBX.
    let summary = json(&env.cli(&["seats", "--json"]));
    let premium = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "premium")
        .unwrap();
    assert_eq!(premium["used"], 2);
    assert_eq!(premium["available"], 0);
    s.daemon.stop();
}

#[test]
fn two_callers_for_the_last_seat_exactly_one_wins() {
    let mut s = site("premium=1,essential=5", &["--enforcement", "hard"]);
    let env = &s.env;
    add_users(env, &[("ann", "201"), ("bob", "202")]);
    let spawn = |id: &str| {
        command(BIN)
            .arg("--config")
            .arg(&env.config)
            .args(["users", "assign", id, "premium"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("ann"), spawn("bob"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let wins = [a.status.success(), b.status.success()];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let summary = json(&env.cli(&["seats", "--json"]));
    let premium = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "premium")
        .unwrap();
    assert_eq!(premium["used"], 1);
    s.daemon.stop();
}

#[test]
fn bad_csv_is_refused_whole_with_every_bad_line() {
    let mut s = site("premium=1,essential=5", &[]);
    let env = &s.env;
    let csv = env.file(
        "bad.csv",
        "extension,number,name,profile\n301,,Ann,essential\n302,,Bob,platinum\n301,,Dup,essential\n303,,Cid\n",
    );
    let out = env.cli(&["users", "import", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    let err = stderr(&out);
    assert!(
        err.contains("bad.csv:3:") && err.contains("platinum"),
        "{err}"
    );
    assert!(err.contains("bad.csv:4:"), "{err}");
    assert!(err.contains("bad.csv:5:"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(
        json(&env.cli(&["users", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let wrong = env.file("wrong.csv", "name,extension\nAnn,301\n");
    let out = env.cli(&["users", "import", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("header"), "{}", stderr(&out));

    let latin1 = env.dir.path().join("latin1.csv");
    std::fs::write(
        &latin1,
        b"extension,number,name,profile\n301,,J\xfcrg,essential\n",
    )
    .unwrap();
    let out = env.cli(&["users", "import", latin1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("UTF-8"), "{}", stderr(&out));

    let huge = env.dir.path().join("huge.csv");
    let mut big = String::from("extension,number,name,profile\n");
    while big.len() <= 9 * 1024 * 1024 {
        big.push_str("1,,x,essential\n");
    }
    std::fs::write(&huge, big).unwrap();
    let out = env.cli(&["users", "import", huge.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
    s.daemon.stop();
}

#[test]
fn readers_check_entitlements_but_only_admins_assign() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root to run the CLI as another user");
        return;
    }
    let mut s = site("premium=1,essential=5", &[]);
    let env = &s.env;
    assert!(env
        .cli(&["users", "add", "ann", "--name", "Ann", "--extension", "201"])
        .status
        .success());
    let nobody = Some(65534);
    let out = env.cli_as(&["users", "show", "201", "--extension", "--json"], nobody);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["licensed"], true);
    let out = env.cli_as(&["users", "assign", "ann", "premium"], nobody);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    s.daemon.stop();
}

#[test]
fn test_mode_lifts_seat_limits_and_expiry_brings_them_back() {
    let mut s = site("premium=1,essential=5", &["--enforcement", "hard"]);
    let env = &s.env;
    add_users(env, &[("ann", "201"), ("bob", "202")]);
    assert!(env
        .cli(&["users", "assign", "ann", "premium"])
        .status
        .success());
    assert!(!env
        .cli(&["users", "assign", "bob", "premium"])
        .status
        .success());
    assert!(env.cli(&["test-mode", "start"]).status.success());
    assert!(env
        .cli(&["users", "assign", "bob", "premium"])
        .status
        .success());
    assert_eq!(
        json(&env.cli(&["users", "show", "bob", "--json"]))["licensed"],
        true
    );
    assert!(env.cli(&["test-mode", "stop"]).status.success());
    // Back to one seat: the earlier assignment keeps it.
    assert_eq!(
        json(&env.cli(&["users", "show", "ann", "--json"]))["licensed"],
        true
    );
    assert_eq!(
        json(&env.cli(&["users", "show", "bob", "--json"]))["licensed"],
        false
    );
    s.daemon.stop();
}

/// Issue 10's reproducer: an export whose assignment sequence is `i64::MAX`
/// used to be restored as it was, and every later import that changed a
/// row then panicked its connection task. It is refused by name now, and
/// the daemon goes on serving.
#[test]
fn restore_refuses_a_sequence_out_of_range() {
    let s = site("basic=5,premium=5,essential=5", &[]);
    let env = &s.env;
    add_users(env, &[("ann", "201")]);
    let export = env.dir.path().join("users.json");
    let out = env.cli(&["export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.cli(&["users", "remove", "ann"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut x: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    x["users"][0]["profile"]["seq"] = serde_json::json!(i64::MAX);
    let bad = env.file("bad.json", &x.to_string());
    let out = env.cli(&["restore", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sequence 9223372036854775807 is outside"),
        "{}",
        stderr(&out)
    );
    // The box is still empty, and an import works.
    let csv = env.file("u.csv", &csv_of(3, |_| "basic"));
    let out = env.cli(&["users", "import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let users = json(&env.cli(&["users", "list", "--json"]));
    assert_eq!(users.as_array().unwrap().len(), 3);
}
