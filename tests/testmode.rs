//! Test mode beyond the seeds, with the real daemon and the real portal:
//! every session in the audit and reported to the portal at the next
//! refresh (`pbx show` sums the last 30 days), the vendor's policy in the
//! signed license (a cool-down, or off), and the hook run when a session
//! ends.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::portal::Portal;
use common::*;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "no {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An activated agent whose test mode lasts `secs`, with an end hook that
/// appends its arguments to `hook.out`.
fn site(secs: u32) -> (Env, Portal, Daemon, common::portal::Pbx) {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("Main office", "premium=5");
    portal.serve();
    let hook = env.file(
        "hook.sh",
        &format!(
            "#!/bin/sh\necho \"$@\" >> {}\n",
            env.dir.path().join("hook.out").display()
        ),
    );
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write_config_with_trust(
        &[&portal.trust_line],
        &format!(
            "{}\n[test_mode]\nduration_secs = {secs}\nend_hook = {:?}\n",
            portal.agent_config(true),
            hook
        ),
    );
    let mut d = env.start();
    d.await_ready();
    let out = env.cli(&["activate", &pbx.key]);
    assert!(out.status.success(), "{}", stderr(&out));
    (env, portal, d, pbx)
}

#[test]
fn sessions_are_audited_reported_to_the_portal_and_run_the_hook() {
    let (env, portal, mut d, pbx) = site(2);
    assert!(env.cli(&["test-mode", "start"]).status.success());
    // It ends by itself; the hook learns how, and the state after.
    let out_file = env.dir.path().join("hook.out");
    wait_until("the end hook", || {
        std::fs::read_to_string(&out_file).is_ok_and(|s| s.contains("ran_out"))
    });
    assert!(std::fs::read_to_string(&out_file)
        .unwrap()
        .contains("ran_out active"));
    // Again, stopped by hand.
    assert!(env.cli(&["test-mode", "start"]).status.success());
    assert!(env.cli(&["test-mode", "stop"]).status.success());
    wait_until("the second hook run", || {
        std::fs::read_to_string(&out_file).is_ok_and(|s| s.contains("stopped"))
    });

    // The audit has both sessions.
    let audit = json(&env.cli(&["users", "audit", "--json"]));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("test_mode"))
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "test_mode_start").count(),
        2
    );
    assert_eq!(actions.iter().filter(|a| **a == "test_mode_end").count(), 2);

    // The next refresh reports them; the vendor sees them.
    assert!(env.cli(&["refresh"]).status.success());
    let shown = json(&portal.admin(&["pbx", "show", &pbx.serial, "--json"]));
    assert_eq!(shown["test_mode_30d"]["sessions"], 2, "{shown:#}");
    assert!(shown["test_mode_30d"]["hours"].as_f64().unwrap() > 0.0);
    let text = stdout(&portal.admin(&["pbx", "show", &pbx.serial]));
    assert!(text.contains("test mode:    2 sessions"), "{text}");
    // Reported once: another refresh does not count them again.
    assert!(env.cli(&["refresh"]).status.success());
    let shown = json(&portal.admin(&["pbx", "show", &pbx.serial, "--json"]));
    assert_eq!(shown["test_mode_30d"]["sessions"], 2);
    d.stop();
}

#[test]
fn the_vendor_policy_in_the_license_sets_a_cool_down_or_turns_test_mode_off() {
    let (env, portal, mut d, pbx) = site(60);
    portal.admin(&["pbx", "test-policy", &pbx.serial, "--cooldown-secs", "3600"]);
    assert!(env.cli(&["refresh"]).status.success());
    assert!(env.cli(&["test-mode", "start"]).status.success());
    assert!(env.cli(&["test-mode", "stop"]).status.success());
    let out = env.cli(&["test-mode", "start"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("can start again at"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("1h 0m"), "{}", stderr(&out));

    portal.admin(&["pbx", "test-policy", &pbx.serial, "--off"]);
    assert!(env.cli(&["refresh"]).status.success());
    let out = env.cli(&["test-mode", "start"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("turns test mode off"),
        "{}",
        stderr(&out)
    );

    // Back to the built-in policy: repeatable at once.
    portal.admin(&["pbx", "test-policy", &pbx.serial, "--default"]);
    assert!(env.cli(&["refresh"]).status.success());
    assert!(env.cli(&["test-mode", "start"]).status.success());
    d.stop();
}
