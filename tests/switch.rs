//! Nothing is downgraded or switched without being asked: a trial never
//! replaces a full license silently, a license of another system is not
//! imported without `--replace`, and a weaker kind never replaces a full
//! license without it. The real daemon; licenses signed by the test's key.

mod common;

use common::portal::Portal;
use common::*;
use licagent::license::LicenseKind;

fn status(env: &Env) -> serde_json::Value {
    json(&env.cli(&["status", "--json"]))
}

/// A daemon holding the full license of SYS-TEST-0001 with two users.
fn licensed() -> (Env, Daemon) {
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let file = env.file("full.lic", &env.sign(&env.payload()));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (id, ext) in [("ann", "201"), ("bob", "202")] {
        let out = env.cli(&["users", "add", id, "--name", id, "--extension", ext]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let _ = &mut d;
    (env, d)
}

#[test]
fn trial_refuses_on_a_box_with_a_full_license() {
    let (env, mut d) = licensed();
    let before = status(&env);
    // A portal is configured, and it is never asked: the machine's one
    // trial is not spent for nothing.
    let mut portal = Portal::init(env.dir.path());
    portal.serve();
    env.write_config_with_trust(
        &[&env.trust_line(), &portal.trust_line],
        &portal.agent_config(true),
    );
    d.reload();
    let out = env.cli(&["trial"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    let id = before["license"]["license_id"].as_str().unwrap();
    assert!(err.contains(id), "{err}");
    assert!(err.contains("SYS-TEST-0001"), "{err}");
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(status(&env)["license"], before["license"]);
    assert!(
        !portal.log().contains("issued trial license"),
        "{}",
        portal.log()
    );
    // Asked for explicitly, it is done.
    let out = env.cli(&["trial", "--replace", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["state"], "trial");
    d.stop();
}

#[test]
fn import_of_another_system_needs_replace_and_says_what_happens() {
    let (env, mut d) = licensed();
    let mut other = env.payload();
    other.system_id = "SYS-OTHER-0002".into();
    other.pbx_name = "Branch office".into();
    other.license_id = "LIC-OTHER".into();
    let file = env.file("other.lic", &env.sign(&other));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "SYS-TEST-0001",
        "Main office",
        "SYS-OTHER-0002",
        "Branch office",
        "2 users stay",
        "--replace",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
    assert_eq!(status(&env)["license"]["system_id"], "SYS-TEST-0001");

    let out = env.cli(&["import", file.to_str().unwrap(), "--replace", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(st["license"]["system_id"], "SYS-OTHER-0002");
    let users = json(&env.cli(&["users", "list", "--json"]));
    assert_eq!(users.as_array().map(Vec::len), Some(2), "{users:#}");
    d.stop();
}

#[test]
fn a_weaker_license_never_replaces_a_full_one_without_replace() {
    let (env, mut d) = licensed();
    for kind in [LicenseKind::Trial, LicenseKind::Test] {
        let mut weak = env.payload();
        weak.kind = kind;
        weak.license_id = format!("LIC-{kind:?}");
        weak.issued_at += 1;
        let file = env.file("weak.lic", &env.sign(&weak));
        let out = env.cli(&["import", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(5), "{kind:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));
        assert_eq!(status(&env)["license"]["kind"], "full");
    }
    // A newer full license of the same system goes in without a flag.
    let mut newer = env.payload();
    newer.license_id = "LIC-NEWER".into();
    newer.issued_at += 2;
    let file = env.file("newer.lic", &env.sign(&newer));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    assert_eq!(status(&env)["license"]["license_id"], "LIC-NEWER");
    d.stop();
}
