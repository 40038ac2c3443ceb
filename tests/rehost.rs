//! The field tech's and the lab's paths, with the real portal and agents:
//! rehost after an RMA, deactivation, a NIC swap, test mode.

mod common;

use std::time::{Duration, Instant};

use common::portal::Portal;
use common::*;

fn status(env: &Env) -> serde_json::Value {
    json(&env.cli(&["status", "--json"]))
}

fn wait_state(env: &Env, want: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = status(env);
        if v["state"] == want {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {want}: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent on `hardware`, configured for `portal`, with its folder under `root`.
fn agent_on(portal: &Portal, hardware: &str) -> (Env, Daemon) {
    let env = Env::with_hardware(hardware);
    portal.configure(&env);
    let mut d = env.start();
    d.await_ready();
    (env, d)
}

#[test]
fn rehost_moves_the_license_and_the_old_box_learns_it() {
    let box_a = Env::with_hardware("bare-metal");
    let mut portal = Portal::init(box_a.dir.path());
    let pbx = portal.add_pbx("Main office", "premium=5,essential=10");
    portal.serve();
    portal.configure(&box_a);
    let mut a = box_a.start();
    a.await_ready();
    assert!(box_a.cli(&["activate", &pbx.key]).status.success());
    for (id, ext, profile) in [("ann", "201", "premium"), ("bob", "202", "essential")] {
        let out = box_a.cli(&[
            "users",
            "add",
            id,
            "--name",
            id,
            "--extension",
            ext,
            "--profile",
            profile,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(box_a
        .cli(&["users", "addon", "add", "ann", "mobile"])
        .status
        .success());
    let users_a = json(&box_a.cli(&["users", "list", "--json"]));
    let export = box_a.dir.path().join("users.json");
    let out = box_a.cli(&["export", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&export).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let seats_a = status(&box_a)["license"]["seats"].clone();
    // Box A dies (it is never asked again until it comes back).
    a.stop();

    let (box_b, mut b) = agent_on(&portal, "vm-dynamic-mac");
    let out = box_b.cli(&["activate", &pbx.key]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("--rehost"), "{}", stderr(&out));

    let out = box_b.cli(&["activate", &pbx.key, "--rehost", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st_b = json(&out);
    assert_eq!(st_b["state"], "active");
    assert_eq!(st_b["license"]["system_id"], pbx.serial.as_str());
    assert_eq!(st_b["license"]["pbx_name"], "Main office");
    // Restoring onto B before its activation would have been refused:
    // checked below with a file of another system.
    let out = box_b.cli(&["restore", export.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&box_b.cli(&["users", "list", "--json"])), users_a);
    assert_eq!(
        status(&box_b)["license"]["seats"],
        seats_a,
        "same seats, same users"
    );
    let out = box_b.cli(&["restore", export.to_str().unwrap()]);
    assert!(stderr(&out).contains("users already"), "{}", stderr(&out));
    let foreign = std::fs::read_to_string(&export)
        .unwrap()
        .replace(&pbx.serial, "SYS-OTHR-0000");
    let foreign = box_b.file("foreign.json", &foreign);
    let out = box_b.cli(&["restore", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("SYS-OTHR-0000"), "{}", stderr(&out));

    // Box A comes back: it still believes in its license until it asks.
    let mut a = box_a.start();
    a.await_ready();
    assert_eq!(status(&box_a)["state"], "active");
    let out = box_a.cli(&["refresh"]);
    assert!(!out.status.success());
    let st_a = status(&box_a);
    assert_eq!(st_a["state"], "revoked");
    let reason = st_a["reason"].as_str().unwrap();
    let b_hwid = st_b["hardware_id"].as_str().unwrap();
    assert!(
        reason.contains(b_hwid),
        "says where the license went: {reason}"
    );

    // B keeps refreshing happily.
    assert!(box_b.cli(&["refresh"]).status.success());
    a.stop();
    b.stop();
}

#[test]
fn deactivate_releases_the_binding_for_another_box() {
    let box_a = Env::with_hardware("bare-metal");
    let mut portal = Portal::init(box_a.dir.path());
    let pbx = portal.add_pbx("Branch", "basic=2");
    portal.serve();
    portal.configure(&box_a);
    let mut a = box_a.start();
    a.await_ready();
    assert!(box_a.cli(&["activate", &pbx.key]).status.success());

    let out = box_a.cli(&["deactivate", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["state"], "unlicensed");
    // Nothing left to deactivate.
    let out = box_a.cli(&["deactivate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("activate first"), "{}", stderr(&out));

    // Another box takes the key without --rehost.
    let (box_b, mut b) = agent_on(&portal, "arm-board");
    let out = box_b.cli(&["activate", &pbx.key]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status(&box_b)["state"], "active");
    a.stop();
    b.stop();
}

#[test]
fn deactivate_with_the_portal_down_keeps_the_license() {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("HQ", "basic=2");
    portal.serve();
    portal.configure(&env);
    let mut d = env.start();
    d.await_ready();
    assert!(env.cli(&["activate", &pbx.key]).status.success());
    portal.stop();
    let out = env.cli(&["deactivate"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be reached"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        status(&env)["state"],
        "active",
        "no lockout when the release did not happen"
    );
    d.stop();
}

#[test]
fn nic_swap_is_tolerated_and_the_next_refresh_rebinds() {
    let env = Env::with_hardware("bare-metal");
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("HQ", "premium=1");
    portal.serve();
    portal.configure(&env);
    let mut d = env.start();
    d.await_ready();
    assert!(env.cli(&["activate", &pbx.key]).status.success());
    d.stop();

    // The same box after its NIC was replaced.
    let swapped = fixture("nic-swapped");
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace(
        &format!("root = {:?}", env.hw_root),
        &format!("root = {swapped:?}"),
    );
    std::fs::write(&env.config, cfg).unwrap();
    let mut d = env.start();
    d.await_ready();
    let st = status(&env);
    assert_eq!(st["state"], "active");
    assert_eq!(st["license"]["hardware_match"], "partial");
    assert_eq!(
        st["license"]["hardware_changed"],
        serde_json::json!(["mac"])
    );
    let human = stdout(&env.cli(&["status"]));
    assert!(human.contains("hardware changed"), "{human}");

    let out = env.cli(&["refresh", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(st["license"]["hardware_match"], "match");
    assert_eq!(st["license"]["bound_hardware_id"], st["hardware_id"]);
    d.stop();
}

#[test]
fn test_mode_unlocks_for_its_time_then_ends_by_itself() {
    let env = Env::new();
    // 8 hours in production; the config may only shorten it.
    env.write_config("\n[test_mode]\nduration_secs = 3\n");
    let mut d = env.start();
    d.await_ready();
    assert_eq!(status(&env)["state"], "unlicensed");

    let out = env.cli(&["test-mode", "start", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(st["state"], "test");
    assert_eq!(st["licensed"], true);
    let left = st["test_mode"]["left_secs"].as_i64().unwrap();
    assert!((1..=3).contains(&left), "{left}");
    assert!(stdout(&env.cli(&["test-mode", "status"])).contains("Test mode is on"));

    let out = env.cli(&["test-mode", "start"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("already on"), "{}", stderr(&out));

    // It survives a restart of the daemon.
    d.stop();
    let mut d = env.start();
    d.await_ready();
    assert_eq!(status(&env)["state"], "test");

    let st = wait_state(&env, "unlicensed");
    assert!(st["test_mode"].is_null());
    assert!(d.log().contains("test mode started"), "{}", d.log());
    // The timer logs the end when it fires, right after.
    d.await_log("test mode ended: its time ran out", 1);

    // It can be started again, and stopped.
    assert!(env.cli(&["test-mode", "start"]).status.success());
    let out = env.cli(&["test-mode", "stop", "--json"]);
    assert_eq!(json(&out)["state"], "unlicensed");
    let out = env.cli(&["test-mode", "stop"]);
    assert!(stderr(&out).contains("not on"), "{}", stderr(&out));
    d.stop();
}

#[test]
fn test_mode_longer_than_eight_hours_is_refused_by_the_config() {
    let env = Env::new();
    env.write_config("\n[test_mode]\nduration_secs = 86400\n");
    let out = env.cli(&["status"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("8 hours"), "{}", stderr(&out));
}

#[test]
fn trial_once_per_machine() {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    portal.admin(&["settings", "set", "trial_secs=4"]);
    portal.serve();
    portal.configure(&env);
    let mut d = env.start();
    d.await_ready();
    let out = env.cli(&["trial", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(st["state"], "trial");
    assert_eq!(st["licensed"], true);
    assert_eq!(st["license"]["kind"], "trial");
    let ends = st["license"]["expires_at"].clone();
    // Asking again while it runs: the same trial, not a longer one.
    let again = json(&env.cli(&["trial", "--json"]));
    assert_eq!(again["license"]["expires_at"], ends);
    // It ends by itself, and the machine cannot start another.
    wait_state(&env, "expired");
    let out = env.cli(&["trial"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("trial"), "{}", stderr(&out));
    // Another machine gets its own.
    let (other, mut o) = agent_on(&portal, "arm-board");
    assert!(other.cli(&["trial"]).status.success());
    o.stop();
    d.stop();
}

#[test]
fn rehost_limit_is_enforced_and_shown() {
    let first = Env::with_hardware("bare-metal");
    let mut portal = Portal::init(first.dir.path());
    portal.admin(&["settings", "set", "rehost_limit=1"]);
    let pbx = portal.add_pbx("Floating", "basic=1");
    portal.serve();
    let (a, mut da) = agent_on(&portal, "bare-metal");
    assert!(a.cli(&["activate", &pbx.key]).status.success());
    let (b, mut db) = agent_on(&portal, "vm-dynamic-mac");
    assert!(b.cli(&["activate", &pbx.key, "--rehost"]).status.success());
    let (c, mut dc) = agent_on(&portal, "arm-board");
    let out = c.cli(&["activate", &pbx.key, "--rehost"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("reset-rehosts"), "{}", stderr(&out));
    assert_eq!(status(&c)["state"], "unlicensed");
    let shown = json(&portal.admin(&["pbx", "show", &pbx.serial, "--json"]));
    assert_eq!(shown["rehosts"]["count"], 1);
    assert_eq!(shown["rehosts"]["limit"], 1);
    // The vendor resets the count; the move goes through.
    portal.admin(&["pbx", "reset-rehosts", &pbx.serial]);
    assert!(c.cli(&["activate", &pbx.key, "--rehost"]).status.success());
    da.stop();
    db.stop();
    dc.stop();
}
