//! Cloned board images end to end: two boards made from one image (same
//! machine-id, CPU and device key, no DMI or board serial, other MACs)
//! with the real daemons and the real portal. `hwid` warns about such an
//! identity; the portal keeps the first box and refuses the clone.

mod common;

use common::portal::Portal;
use common::*;

#[test]
fn hwid_warns_when_the_identity_is_the_machine_id_alone() {
    let env = Env::with_hardware("cloned-board-a");
    let out = env.cli(&["hwid"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rests on its machine-id alone"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("empty /etc/machine-id"));
    // A board with its own serial does not get it.
    let env = Env::with_hardware("arm-board");
    assert!(!stderr(&env.cli(&["hwid"])).contains("machine-id alone"));
}

/// Copies the agent's state (database, device key) as a disk image would.
fn copy_state(from: &Env, to: &Env) {
    std::fs::create_dir_all(&to.state_dir).unwrap();
    for entry in std::fs::read_dir(&from.state_dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.state_dir.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_cloned_board_is_refused_by_the_portal_and_the_first_keeps_its_license() {
    let a = Env::with_hardware("cloned-board-a");
    let mut portal = Portal::init(a.dir.path());
    let pbx = portal.add_pbx("Main office", "premium=5");
    portal.serve();
    portal.configure(&a);
    let mut da = a.start();
    da.await_ready();
    let out = a.cli(&["activate", &pbx.key]);
    assert!(out.status.success(), "{}", stderr(&out));
    da.stop();

    // The image, state folder and all, goes onto a second board.
    let b = Env::with_hardware("cloned-board-b");
    copy_state(&a, &b);
    portal.configure(&b);
    let mut db = b.start();
    db.await_ready();
    let mut da = a.start();
    da.await_ready();

    // The clone's first refresh passes as a NIC swap would; the first
    // box's next one shows two boxes.
    assert!(b.cli(&["refresh"]).status.success());
    let out = a.cli(&["refresh", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["state"], "active");
    // From now on the clone is refused, with the portal's sentence.
    let out = b.cli(&["refresh"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use on another box"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--rehost"), "{}", stderr(&out));
    let st = json(&b.cli(&["status", "--json"]));
    assert!(
        st["refresh"]["last_error"]
            .as_str()
            .unwrap()
            .contains("in use on another box"),
        "{st:#}"
    );
    // The first box goes on.
    assert!(a.cli(&["refresh"]).status.success());
    let shown = json(&portal.admin(&["pbx", "show", &pbx.serial, "--json"]));
    assert_eq!(shown["duplicate"]["kept_hardware_id"], st_hw(&a));
    assert_eq!(shown["duplicate"]["hardware_id"], st_hw(&b));
    da.stop();
    db.stop();
}

fn st_hw(env: &Env) -> serde_json::Value {
    json(&env.cli(&["status", "--json"]))["hardware_id"].clone()
}
