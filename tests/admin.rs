//! Rough edges an admin met, each fixed: seats shown while the box is not
//! licensed, unknown codes refused in filters, usage errors for bad words,
//! add-on changes named in the audit, notes for codes nobody bought, keys
//! pasted from a PDF.

mod common;

use common::portal::Portal;
use common::*;

#[test]
fn an_admin_sees_who_holds_what_when_the_box_is_not_licensed() {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("Admin", "premium=2,essential=3");
    portal.serve();
    env.write_config_with_trust(&[&portal.trust_line], &portal.agent_config(true));
    let mut d = env.start();
    d.await_ready();
    // Pasted from a PDF: non-breaking spaces and an en dash.
    let pasted = pbx
        .key
        .replacen('-', "\u{00A0}", 2)
        .replacen('-', "\u{2013}", 1);
    let out = env.cli(&["activate", &pasted]);
    assert!(out.status.success(), "{pasted:?}: {}", stderr(&out));
    for (id, ext, p) in [
        ("a", "201", "premium"),
        ("b", "202", "premium"),
        ("c", "203", "essential"),
    ] {
        let out = env.cli(&[
            "users",
            "add",
            id,
            "--name",
            id,
            "--extension",
            ext,
            "--profile",
            p,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = env.cli(&["users", "addon", "add", "a", "mobile"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The audit names the add-on that changed.
    let audit = stdout(&env.cli(&["users", "audit", "--user", "a"]));
    assert!(audit.contains("add-on mobile added"), "{audit}");
    assert!(!audit.contains("profile premium -> premium"), "{audit}");

    // Filters with a code nobody has are refused, like `add` refuses them.
    let out = env.cli(&["users", "list", "--profile", "gold"]);
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));
    assert!(stderr(&out).contains("gold"), "{}", stderr(&out));
    let out = env.cli(&["users", "list", "--profile", "premium", "--json"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 2);
    // A bad word is a usage error (exit 2), before any call.
    let out = env.cli(&[
        "users",
        "add",
        "r",
        "--name",
        "R",
        "--extension",
        "299",
        "--kind",
        "robot",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Revoked: seats still show who holds what, nothing licensed.
    portal.admin(&["pbx", "revoke", &pbx.serial, "--reason", "unpaid"]);
    let _ = env.cli(&["refresh"]);
    let seats = json(&env.cli(&["seats", "--json"]));
    let premium = seats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "premium")
        .unwrap_or_else(|| panic!("premium missing from {seats:#}"));
    assert_eq!(premium["used"], 2, "{seats:#}");
    assert_eq!(premium["purchased"], 2);
    assert_eq!(premium["licensed"], 0);
    let mobile = seats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "mobile")
        .unwrap();
    assert_eq!(mobile["used"], 1);
    d.stop();
    // The portal's log went to a file: plain text, no colour codes.
    let log = portal.log();
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log: {log:?}"
    );
}

#[test]
fn a_note_for_an_add_on_nobody_bought_says_so() {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("Notes", "premium=2");
    portal.serve();
    env.write_config_with_trust(&[&portal.trust_line], &portal.agent_config(true));
    let mut d = env.start();
    d.await_ready();
    assert!(env.cli(&["activate", &pbx.key]).status.success());
    let out = env.cli(&[
        "users",
        "add",
        "a",
        "--name",
        "A",
        "--extension",
        "201",
        "--profile",
        "premium",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.cli(&["users", "addon", "add", "a", "desktop_app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&env.cli(&["users", "show", "a", "--json"]));
    let note = v["addons"][0]["note"].as_str().unwrap();
    assert!(note.contains("no Desktop app seats were bought"), "{note}");
    assert!(!note.contains("went to earlier assignments"), "{note}");
    d.stop();
}

#[test]
fn check_config_is_nginx_t_and_a_bad_config_exits_6() {
    let env = Env::new();
    let out = env.cli(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the configuration is valid"),
        "{}",
        stdout(&out)
    );
    let bad = env.file(
        "bad.toml",
        "version = 1\n[refresh]\nretry_min_secs = \"60\"\n",
    );
    let out = env.cli(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 3: refresh.retry_min_secs: invalid type"),
        "{}",
        stderr(&out)
    );
    let missing_ca = env.file(
        "ca.toml",
        "version = 1\n[portal]\nurl = \"https://127.0.0.1:1\"\nca_file = \"/nonexistent/ca.pem\"\n",
    );
    let out = env.cli(&["check-config", missing_ca.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    // The daemon itself exits 6 on a bad config: the unit's
    // RestartPreventExitStatus=6 then stops the restart loop.
    let mut cmd = command(BIN);
    cmd.args(["--config", bad.to_str().unwrap(), "run"]);
    let out = run_with_timeout(cmd);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
}

#[test]
fn version_names_the_build() {
    let out = Env::new().cli(&["--version"]);
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert_eq!(first, format!("licagent {}", env!("CARGO_PKG_VERSION")));
    for key in [
        "commit: ",
        "target: ",
        "profile: ",
        "schema: ",
        "vendor keys: ",
    ] {
        assert!(text.contains(key), "{key} missing from {text}");
    }
    assert!(text.contains(&format!("schema: {}", licagent::store::SCHEMA_VERSION)));
}
