//! End to end: the real `licportal serve` and the real `licagent run`, both on
//! loopback, over TLS with a CA made for the test. Activation, refresh,
//! grace, revocation, offline activation, and every fault the agent must
//! survive with its installed license untouched.

mod common;

use std::time::{Duration, Instant};

use common::portal::Portal;
use common::*;

/// Waits until `status --json` satisfies `pred`; returns that status.
fn wait_status(
    env: &Env,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let out = env.cli(&["status", "--json"]);
        // The exit code is the state's (docs/cli.md); an answer is JSON.
        if out.stdout.starts_with(b"{") {
            let v = json(&out);
            if pred(&v) {
                return v;
            }
            if start.elapsed() > Duration::from_secs(40) {
                panic!("timed out waiting for {what}; last status: {v:#}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state(v: &serde_json::Value) -> &str {
    v["state"].as_str().unwrap_or("")
}

/// Portal + agent, activated with a fresh PBX of premium=5, essential=10.
struct Site {
    env: Env,
    portal: Portal,
    daemon: Daemon,
    pbx: common::portal::Pbx,
}

fn activated_site(refresh_secs: u32, grace_secs: u32) -> Site {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    portal.admin(&[
        "settings",
        "set",
        &format!("refresh_secs={refresh_secs}"),
        &format!("grace_secs={grace_secs}"),
    ]);
    let pbx = portal.add_pbx("Main office", "premium=5,essential=10");
    portal.serve();
    portal.configure(&env);
    let mut daemon = env.start();
    daemon.await_ready();
    // Pasted the way people paste: lower case, spaces instead of dashes.
    let pasted = pbx.key.to_lowercase().replace('-', " ");
    let out = env.cli(&["activate", &pasted]);
    assert!(
        out.status.success(),
        "activate: {}\nlog:\n{}",
        stderr(&out),
        daemon.log()
    );
    Site {
        env,
        portal,
        daemon,
        pbx,
    }
}

#[test]
fn activate_by_key_then_seat_changes_arrive_by_refresh_without_restart() {
    let mut s = activated_site(86_400, 14 * 86_400);
    let st = json(&s.env.cli(&["status", "--json"]));
    assert_eq!(state(&st), "active");
    assert_eq!(st["license"]["system_id"], s.pbx.serial.as_str());
    assert_eq!(st["license"]["seats"]["premium"]["purchased"], 5);
    assert_eq!(st["license"]["seats"]["essential"]["purchased"], 10);
    assert!(st["refresh"]["next_refresh"].is_string(), "{st:#}");

    // The key never appears whole in the daemon's log.
    let log = s.daemon.log();
    assert!(!log.contains(&s.pbx.key), "the key leaked into the log");
    let last_group = s.pbx.key.rsplit('-').next().unwrap();
    assert!(
        log.contains(last_group),
        "the redacted key names its last group"
    );

    // The same machine and key again: a fresh license, not an error.
    let out = s.env.cli(&["activate", &s.pbx.key, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(&json(&out)), "active");

    s.portal.admin(&[
        "pbx",
        "edit",
        &s.pbx.serial,
        "--seats",
        "premium=8,business=2",
    ]);
    let out = s.env.cli(&["refresh", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(st["license"]["seats"]["premium"]["purchased"], 8);
    assert_eq!(st["license"]["seats"]["business"]["purchased"], 2);
    assert!(st["license"]["seats"]["essential"].is_null());
    // Same daemon process throughout: no restart.
    assert!(s.daemon.child.try_wait().unwrap().is_none());
    assert!(s.daemon.stop().success());
}

#[test]
fn portal_outage_gives_grace_and_its_return_gives_active() {
    // Due 6 s after issue; refresh planned 1.5 s before that.
    let mut s = activated_site(6, 600);
    let addr = s.portal.addr.clone().unwrap();
    s.portal.stop();
    let st = wait_status(&s.env, "grace", |v| state(v) == "grace");
    assert_eq!(st["licensed"], true, "licensed while in grace");
    assert!(st["license"]["grace_left_secs"].as_i64().unwrap() > 0);
    assert!(st["refresh"]["failures"].as_u64().unwrap() >= 1, "{st:#}");
    assert!(
        st["refresh"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{st:#}"
    );
    let human = stdout(&s.env.cli(&["status"]));
    assert!(human.contains("Grace ends:"), "{human}");
    assert!(human.contains("State:        grace (licensed)"), "{human}");
    // Words and dates for people, not internal names or raw RFC 3339.
    assert!(human.contains("(full license, yearly term)"), "{human}");
    assert!(!human.contains("Full, Yearly"), "{human}");
    assert!(human.contains(" UTC (in "), "{human}");

    // Back on the same address: the backoff retries find it.
    s.portal.serve_on(&addr);
    let st = wait_status(&s.env, "active again", |v| state(v) == "active");
    assert_eq!(st["refresh"]["failures"], 0);
    s.daemon.stop();
}

#[test]
fn grace_that_ends_without_the_portal_expires_the_license() {
    let mut s = activated_site(3, 3);
    s.portal.stop();
    let st = wait_status(&s.env, "expired", |v| state(v) == "expired");
    assert_eq!(st["licensed"], false);
    assert!(st["reason"].as_str().unwrap().contains("grace"), "{st:#}");
    s.daemon.stop();
}

#[test]
fn revocation_on_the_portal_reaches_the_agent_and_survives_restart() {
    let mut s = activated_site(86_400, 86_400);
    let add = ["users", "add", "ann", "--name", "Ann", "--extension", "201"];
    assert!(s.env.cli(&add).status.success());
    let ann = || json(&s.env.cli(&["users", "show", "ann", "--json"]));
    assert_eq!(ann()["licensed"], true);
    s.portal.admin(&[
        "pbx",
        "revoke",
        &s.pbx.serial,
        "--reason",
        "order cancelled",
    ]);
    let out = s.env.cli(&["refresh"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("order cancelled"), "{}", stderr(&out));
    let st = json(&s.env.cli(&["status", "--json"]));
    assert_eq!(state(&st), "revoked");
    assert_eq!(st["licensed"], false);
    // Revocation takes the seats away at once, without a restart.
    assert_eq!(ann()["licensed"], false);
    s.daemon.stop();
    let mut d = s.env.start();
    d.await_ready();
    let st = json(&s.env.cli(&["status", "--json"]));
    assert_eq!(state(&st), "revoked");
    assert!(
        st["reason"].as_str().unwrap().contains("order cancelled"),
        "{st:#}"
    );
    d.stop();
}

#[test]
fn offline_activation_round_trip() {
    let env = Env::new();
    let portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("Air-gapped", "basic=3");
    // No portal URL at all: the agent is offline.
    env.write_config_with_trust(&[&portal.trust_line], "");
    let mut d = env.start();
    d.await_ready();
    let out = env.cli(&["activate", &pbx.key]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no portal is configured"),
        "{}",
        stderr(&out)
    );

    let out = env.cli(&["request-code", &pbx.key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let code = env.file("request.txt", &stdout(&out));
    let lic = env.dir.path().join("offline.lic");
    portal.admin(&[
        "offline-activate",
        code.to_str().unwrap(),
        "-o",
        lic.to_str().unwrap(),
    ]);
    let out = env.cli(&["import", lic.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(state(&st), "active");
    assert_eq!(st["license"]["seats"]["basic"]["purchased"], 3);
    d.stop();
}

#[test]
fn key_typo_is_caught_before_any_call_and_unknown_key_is_one_sentence() {
    let s = activated_site(86_400, 86_400);
    let before = json(&s.env.cli(&["status", "--json"]));
    // Swap two neighbouring characters of the first group.
    let mut chars: Vec<char> = s.pbx.key.chars().collect();
    chars.swap(0, 1);
    if chars[0] == chars[1] {
        chars[0] = if chars[0] == '7' { '8' } else { '7' };
    }
    let typo: String = chars.into_iter().collect();
    let out = s.env.cli(&["activate", &typo]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("typo"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no request was sent"),
        "{}",
        stderr(&out)
    );

    let unknown = licagent::license::PortalKey::generate().to_string();
    let out = s.env.cli(&["activate", &unknown]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the portal refused"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert_eq!(
        json(&s.env.cli(&["status", "--json"]))["license"],
        before["license"]
    );
}

#[test]
fn key_bound_to_another_machine_names_rehost() {
    let s = activated_site(86_400, 86_400);
    let other = Env::with_hardware("vm-dynamic-mac");
    s.portal.configure(&other);
    let mut d = other.start();
    d.await_ready();
    let out = other.cli(&["activate", &s.pbx.key]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("--rehost"), "{}", stderr(&out));
    assert_eq!(
        state(&json(&other.cli(&["status", "--json"]))),
        "unlicensed"
    );
    d.stop();
}

/// Every portal fault leaves the installed license as it was and the PBX
/// licensed; each says what went wrong.
#[test]
fn portal_faults_leave_the_installed_license_alone() {
    let mut s = activated_site(86_400, 86_400);
    let before = json(&s.env.cli(&["status", "--json"]))["license"].clone();
    let cases = [
        ("down", "cannot be reached"),
        ("slow:5", "did not answer within 2 seconds"),
        ("error500", "refused"),
        ("garbage", "could not be understood"),
        ("unknown-signer", "unknown key"),
        ("wrong-nonce", "nonce mismatch"),
    ];
    for (fault, expect) in cases {
        s.portal.fault(fault);
        for args in [vec!["refresh"], vec!["activate", s.pbx.key.as_str()]] {
            let out = s.env.cli(&args);
            assert!(!out.status.success(), "{fault} {args:?} should fail");
            assert!(
                stderr(&out).contains(expect),
                "{fault} {args:?}: expected {expect:?} in {}",
                stderr(&out)
            );
            let st = json(&s.env.cli(&["status", "--json"]));
            assert_eq!(state(&st), "active", "{fault}");
            assert_eq!(st["license"], before, "{fault}: the license changed");
        }
    }
    s.portal.fault("none");
    assert!(s.env.cli(&["refresh"]).status.success());
    assert!(
        s.daemon.child.try_wait().unwrap().is_none(),
        "the daemon survived"
    );
    s.daemon.stop();
}

#[test]
fn untrusted_tls_certificate_is_refused() {
    let s = activated_site(86_400, 86_400);
    let before = json(&s.env.cli(&["status", "--json"]))["license"].clone();
    // The same portal, but the agent no longer trusts its CA.
    s.env
        .write_config_with_trust(&[&s.portal.trust_line], &s.portal.agent_config(false));
    s.daemon.reload();
    let out = s.env.cli(&["refresh"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    let st = json(&s.env.cli(&["status", "--json"]));
    assert_eq!(state(&st), "active");
    assert_eq!(st["license"], before);
}

#[test]
fn plain_http_portal_is_refused_by_the_config() {
    let env = Env::new();
    env.write_config("\n[portal]\nurl = \"http://127.0.0.1:9\"\n");
    let out = env.cli(&["status"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(stderr(&out).contains("https"), "{}", stderr(&out));
}

#[test]
fn certificate_pinning_accepts_the_pinned_portal_only() {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let s = activated_site(86_400, 86_400);
    let cert = CertificateDer::from_pem_file(s.portal.data.join("tls/cert.pem")).unwrap();
    let pin = licagent::portal::client::sha256_hex(cert.as_ref());
    let reload = |pin: &str| {
        let cfg = s.portal.agent_config(true).replace(
            "timeout_secs = 2\n",
            &format!("timeout_secs = 2\npin_sha256 = [{pin:?}]\n"),
        );
        s.env.write_config_with_trust(&[&s.portal.trust_line], &cfg);
        s.daemon.reload();
    };
    reload(&pin);
    let out = s.env.cli(&["refresh"]);
    assert!(out.status.success(), "pinned: {}", stderr(&out));
    reload(&"ab".repeat(32));
    let out = s.env.cli(&["refresh"]);
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    assert_eq!(state(&json(&s.env.cli(&["status", "--json"]))), "active");
}

#[test]
fn a_clock_moved_back_never_makes_a_license_longer() {
    let env = Env::new();
    // The agent once saw a time two years ahead of this clock.
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let (mut store, _) = licagent::store::Store::open(&env.db()).unwrap();
    let two_years = 2 * 365 * 86_400;
    store
        .advance_clock_mark(licagent::time::now() + two_years)
        .unwrap();
    drop(store);
    let mut d = env.start();
    d.await_ready();
    // Valid for one year by this machine's clock: already over by the mark.
    let file = env.file("year.lic", &env.sign(&env.payload()));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    d.stop();
}
