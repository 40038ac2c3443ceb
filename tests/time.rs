//! Trusted time end to end: the real daemon under libfaketime (Debian's
//! `faketime` package; scripts/test.sh installs it), whose wall clock the
//! test moves while it runs through `FAKETIME_TIMESTAMP_FILE`, with
//! `FAKETIME_DONT_FAKE_MONOTONIC=1` so that `CLOCK_BOOTTIME` stays real. The
//! portal and the CLI run on the real clock.
//!
//! No assertion here depends on how fast the machine is, except the two
//! marked ones with a wide margin. The tests print the figures of
//! docs/operations.md ("figure: ...") with
//! `cargo test --test time -- --nocapture`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::portal::Portal;
use common::*;

const YEAR: i64 = 365 * 86_400;

/// libfaketime's preload library, wherever Debian put it for this arch.
fn libfaketime() -> String {
    let candidates = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")]);
    for c in candidates {
        if c.exists() {
            return c.display().to_string();
        }
    }
    panic!("libfaketime is not installed: apt-get install faketime (scripts/test.sh does it)");
}

/// The wall clock of one daemon: an offset in libfaketime's syntax
/// ("+0", "-365d", "+400d", "-10m") in a file it re-reads on every call.
struct FakeClock {
    file: PathBuf,
    lib: String,
}

impl FakeClock {
    fn new(env: &Env, offset: &str) -> FakeClock {
        let clock = FakeClock {
            file: env.dir.path().join("faketime.rc"),
            lib: libfaketime(),
        };
        clock.set(offset);
        clock
    }

    fn set(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
    }

    /// Starts the daemon on this clock; `boot_id` simulates a reboot.
    fn start(&self, env: &Env, boot_id: Option<&str>) -> Daemon {
        let file = self.file.display().to_string();
        let mut vars = vec![
            ("LD_PRELOAD", self.lib.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", file.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        if let Some(id) = boot_id {
            vars.push(("LICAGENT_BOOT_ID", id));
        }
        let mut d = Daemon::start(env, &vars);
        d.await_ready();
        d
    }
}

fn status(env: &Env) -> serde_json::Value {
    json(&env.cli(&["status", "--json"]))
}

/// Real Unix time in seconds, with fractions.
fn real_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn unix(rfc3339: &str) -> f64 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls `status` until `state`; returns it and the real time at which it
/// was first seen.
fn wait_state(env: &Env, state: &str) -> (serde_json::Value, f64) {
    let start = Instant::now();
    loop {
        let out = env.cli(&["status", "--json"]);
        let at = real_now();
        // The exit code is the state's (docs/cli.md); an answer is JSON.
        let v = out
            .stdout
            .starts_with(b"{")
            .then(|| json(&out))
            .filter(|v| v.get("state").is_some());
        if let Some(v) = &v {
            if v["state"] == state {
                return (v.clone(), at);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {state}: {v:#?} {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn offset(v: &serde_json::Value) -> i64 {
    v["clock"]["offset_secs"].as_i64().unwrap()
}

/// A portal with `refresh_secs`/`grace_secs` and an agent on `clock`,
/// activated.
fn activated(env: &Env, clock: &FakeClock, refresh: u32, grace: u32) -> (Portal, Daemon) {
    let mut portal = Portal::init(env.dir.path());
    portal.admin(&[
        "settings",
        "set",
        &format!("refresh_secs={refresh}"),
        &format!("grace_secs={grace}"),
    ]);
    let pbx = portal.add_pbx("Main office", "premium=5,essential=10");
    portal.serve();
    portal.configure(env);
    let d = clock.start(env, None);
    let out = env.cli(&["activate", &pbx.key]);
    assert!(
        out.status.success(),
        "activate: {}\n{}",
        stderr(&out),
        d.log()
    );
    (portal, d)
}

#[test]
fn a_clock_set_back_a_year_still_brings_grace_and_expiry_on_their_time() {
    let env = Env::new();
    let clock = FakeClock::new(&env, "+0");
    let (mut portal, mut d) = activated(&env, &clock, 8, 4);
    let st = status(&env);
    assert_eq!(st["state"], "active");
    assert_eq!(st["clock"]["source"], "portal");
    let due = unix(st["license"]["refresh_due"].as_str().unwrap());
    let grace_end = unix(st["license"]["grace_ends"].as_str().unwrap());
    assert_eq!(st["next"]["state"], "grace");

    // The attacker's move: the clock a year back, the portal unreachable.
    clock.set("-365d");
    portal.stop();
    let (st, seen) = wait_state(&env, "grace");
    assert!(offset(&st) < -(YEAR - 60), "{st:#}");
    assert!(st["clock"]["warning"].as_str().unwrap().contains("behind"));
    assert_eq!(st["next"]["state"], "expired");
    println!(
        "figure: clock back 1 year: grace came {:.2} s after refresh due",
        seen - due
    );
    let (st, seen) = wait_state(&env, "expired");
    assert!(st["reason"].as_str().unwrap().contains("grace"), "{st:#}");
    println!(
        "figure: clock back 1 year: expiry came {:.2} s after grace end",
        seen - grace_end
    );
    // A restart with the clock still back changes nothing.
    d.stop();
    let mut d = clock.start(&env, None);
    assert_eq!(status(&env)["state"], "expired");
    d.stop();
}

#[test]
fn a_clock_forward_400_days_then_back_is_active_after_one_refresh() {
    let env = Env::new();
    let clock = FakeClock::new(&env, "+0");
    let (mut portal, mut d) = activated(&env, &clock, 3600, 600);

    // Within a boot a forward jump is ignored once the portal spoke.
    clock.set("+400d");
    let st = status(&env);
    assert_eq!(st["state"], "active", "{st:#}");
    assert!(offset(&st) > 399 * 86_400, "{st:#}");

    // A board that boots with the wrong date: the saved time is only a
    // floor, so trusted time takes the later wall clock and the license
    // looks expired until the portal is reached once. (The portal is away
    // at boot: else the daemon's own first refresh, due at once, would
    // correct the time before this test looks.)
    d.stop();
    let addr = portal.addr.clone().expect("the portal's address");
    portal.stop();
    let mut d = clock.start(&env, Some("reboot-with-a-wrong-date"));
    let st = status(&env);
    assert_eq!(st["state"], "expired", "{st:#}");
    assert_eq!(st["clock"]["source"], "boot");
    portal.serve_on(&addr);
    let out = env.cli(&["refresh", "--json"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    let st = json(&out);
    assert_eq!(st["state"], "active", "{st:#}");
    assert_eq!(st["clock"]["source"], "portal");
    assert!(offset(&st) > 399 * 86_400, "{st:#}");
    println!(
        "figure: clock forward 400 days at boot: {} right after the first refresh (the request was stale, the portal's stamp corrected the time, the second try passed)",
        st["state"]
    );
    assert!(
        d.log().contains("the portal corrected this agent's time"),
        "{}",
        d.log()
    );

    // And back: still active, before and after a restart.
    clock.set("+0");
    assert_eq!(status(&env)["state"], "active");
    d.stop();
    let mut d = clock.start(&env, Some("reboot-with-a-wrong-date"));
    assert_eq!(status(&env)["state"], "active");
    d.stop();
}

#[test]
fn a_pbx_clock_behind_still_activates_and_refreshes_and_shows_the_offset() {
    for (offset_arg, secs) in [("-10m", 600), ("-365d", YEAR)] {
        let env = Env::new();
        let clock = FakeClock::new(&env, offset_arg);
        let (_portal, mut d) = activated(&env, &clock, 3600, 600);
        let out = env.cli(&["refresh", "--json"]);
        assert!(out.status.success(), "{offset_arg}: {}", stderr(&out));
        let st = json(&out);
        assert_eq!(st["state"], "active");
        assert_eq!(st["clock"]["source"], "portal");
        let off = offset(&st);
        assert!((off + secs).abs() < 60, "{offset_arg}: {st:#}");
        assert!(st["clock"]["warning"].as_str().unwrap().contains("behind"));
        let human = stdout(&env.cli(&["status"]));
        assert!(human.contains("Wall clock:"), "{human}");
        assert!(human.contains("behind"), "{human}");
        println!(
            "figure: PBX clock {offset_arg}: refresh succeeded, status offset_secs = {off}, source {}",
            st["clock"]["source"]
        );
        d.stop();
    }
}

#[test]
fn a_reboot_with_the_clock_back_runs_on_from_the_saved_time() {
    let env = Env::new();
    let clock = FakeClock::new(&env, "+0");
    let mut d = clock.start(&env, Some("first-boot"));
    // Issued a little ahead of this clock: trusted time takes it as a floor.
    let mut p = env.payload();
    p.issued_at = licagent::time::now() + 30;
    let file = env.file("main.lic", &env.sign(&p));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    d.stop();
    // Rebooted at 1970-ish by a board without RTC.
    clock.set("-20000d");
    let mut d = clock.start(&env, Some("second-boot"));
    let st = status(&env);
    assert_eq!(st["state"], "active", "{st:#}");
    assert_eq!(st["clock"]["source"], "boot");
    let trusted = unix(st["clock"]["trusted_now"].as_str().unwrap());
    assert!((trusted - real_now()).abs() < 120.0, "{st:#}");
    assert!(st["clock"]["warning"].as_str().unwrap().contains("behind"));
    d.stop();
}

#[test]
fn a_license_file_is_a_floor_for_trusted_time() {
    let env = Env::new();
    // A board at 1970 with nothing trusted yet: no tamper verdict.
    let clock = FakeClock::new(&env, "-20000d");
    let mut d = clock.start(&env, None);
    let st = status(&env);
    assert_eq!(st["clock"]["source"], "wall_clock");
    assert!(st["clock"]["warning"].is_null(), "{st:#}");
    // A license issued now moves trusted time up to its issue time, so it
    // is neither "not yet valid" nor expired.
    let file = env.file("main.lic", &env.sign(&env.payload()));
    let out = env.cli(&["import", file.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = json(&out);
    assert_eq!(st["state"], "active", "{st:#}");
    assert_eq!(st["clock"]["source"], "license_file");
    assert!(offset(&st) < -(19_000 * 86_400), "{st:#}");
    d.stop();
}

#[test]
fn test_mode_and_trial_end_on_their_second() {
    let env = Env::new();
    env.write_config("\n[test_mode]\nduration_secs = 3\n");
    let mut d = env.start();
    d.await_ready();
    // Idle for a moment, so that the daemon's timer is in its long sleep
    // when test mode starts: only the wake-up brings the end on time.
    std::thread::sleep(Duration::from_millis(500));
    let st = json(&env.cli(&["test-mode", "start", "--json"]));
    let ends = unix(st["test_mode"]["ends_at"].as_str().unwrap());
    assert_eq!(st["next"]["state"], "unlicensed");
    let (_, seen) = wait_state(&env, "unlicensed");
    let late = seen - ends;
    println!("figure: test mode ended {late:.2} s after its end time");
    // Wide margin (the loop used to sleep up to 30 s unwoken).
    assert!(late < 15.0, "test mode ended {late} s late");
    d.stop();

    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    portal.admin(&["settings", "set", "trial_secs=4"]);
    portal.serve();
    portal.configure(&env);
    let mut d = env.start();
    d.await_ready();
    let st = json(&env.cli(&["trial", "--json"]));
    assert_eq!(st["next"]["state"], "expired");
    let ends = unix(st["license"]["expires_at"].as_str().unwrap());
    let (_, seen) = wait_state(&env, "expired");
    let late = seen - ends;
    println!("figure: trial ended {late:.2} s after its expires_at");
    assert!(late < 15.0, "the trial ended {late} s late");
    d.stop();
}
