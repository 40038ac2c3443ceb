//! Unit tests of the store, on real files in temporary folders.

use super::*;

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

fn lic(id: &str, at: i64) -> StoredLicense {
    StoredLicense {
        license_id: id.to_string(),
        armored: format!(
            "-----BEGIN LICAGENT LICENSE-----\n{id}\n-----END LICAGENT LICENSE-----\n"
        ),
        installed_at: at,
    }
}

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("licagent.db")
}

fn open(path: &Path) -> Store {
    let (store, report) = Store::open(path).unwrap();
    assert_eq!(report, OpenReport::default(), "unexpected move-aside");
    store
}

fn user_version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn schema_sql(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

/// Deterministic junk (xorshift), so a failing corruption test replays.
fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn files_named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_a_migrated_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path);
    assert_eq!(store.path(), path);
    assert!(path.is_file());
    assert_eq!(store.current_license().unwrap(), None);
    assert!(store.license_history().unwrap().is_empty());
    drop(store);
    assert_eq!(user_version(&path), schema::MIGRATIONS.len() as i64);
}

#[test]
fn open_sets_wal_full_sync_foreign_keys_and_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir));
    let get = |pragma: &str| -> String {
        store
            .conn
            .pragma_query_value(None, pragma, |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    v => v.as_i64()?.to_string(),
                })
            })
            .unwrap()
    };
    assert_eq!(get("journal_mode"), "wal");
    assert_eq!(get("foreign_keys"), "1");
    assert_eq!(get("synchronous"), "2", "FULL is 2");
    assert_eq!(get("busy_timeout"), "5000");
}

#[test]
fn new_database_and_its_wal_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    store.set_setting("k", Some("v")).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    // The store is still open after a write, so the WAL exists.
    assert_eq!(mode(&with_suffix(&path, "-wal")), 0o600);
}

#[test]
fn existing_file_mode_is_left_alone() {
    // Tightening is for files we create; an admin's choice on an existing
    // file (say 0640 for a backup group) is theirs.
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(open(&path));
    fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
    drop(open(&path));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    store.install_license(&lic("L1", 100)).unwrap();
    store.set_setting("name", Some("pbx-1")).unwrap();
    store.advance_clock_mark(1_700_000_000).unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(store.current_license().unwrap(), Some(lic("L1", 100)));
    assert_eq!(store.setting("name").unwrap().as_deref(), Some("pbx-1"));
    assert_eq!(store.clock_mark().unwrap(), 1_700_000_000);
}

#[test]
fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    store.install_license(&lic("L1", 1)).unwrap();
    let schema_before = schema_sql(&path);
    // Again on the open connection, and again through a reopen.
    migrate(&mut store.conn, schema::MIGRATIONS, &path).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(store.current_license().unwrap(), Some(lic("L1", 1)));
    drop(store);
    assert_eq!(schema_sql(&path), schema_before);
    assert_eq!(user_version(&path), schema::MIGRATIONS.len() as i64);
}

#[test]
fn migrations_apply_in_order_and_a_failing_step_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut conn = Connection::open(&path).unwrap();
    let steps = [
        "CREATE TABLE one (x INTEGER);",
        "CREATE TABLE two (x INTEGER REFERENCES one(x));",
        // Creates a table, then fails: neither the table nor the bump stays.
        "CREATE TABLE three (x INTEGER); INSERT INTO nowhere VALUES (1);",
    ];
    migrate(&mut conn, &steps[..2], &path).unwrap();
    assert_eq!(
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap(),
        2
    );
    let err = migrate(&mut conn, &steps, &path).unwrap_err();
    assert!(
        matches!(err, StoreError::Migrate { version: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap(),
        2
    );
    let three: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'three'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(three, 0);
}

#[test]
fn newer_schema_is_refused_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    store.install_license(&lic("L1", 1)).unwrap();
    drop(store);
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let err = Store::open(&path).err().unwrap();
    match err {
        StoreError::TooNew { found, known, .. } => {
            assert_eq!(found, 99);
            assert_eq!(known, schema::MIGRATIONS.len() as i64);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    // Nothing moved, nothing lost.
    assert_eq!(
        files_named(dir.path(), "licagent.db.corrupt"),
        Vec::<String>::new()
    );
    let conn = Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM licenses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn install_moves_the_previous_license_to_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    store.install_license(&lic("L1", 100)).unwrap();
    store.install_license(&lic("L2", 200)).unwrap();
    store.install_license(&lic("L3", 300)).unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(store.current_license().unwrap(), Some(lic("L3", 300)));
    assert_eq!(
        store.license_history().unwrap(),
        vec![lic("L2", 200), lic("L1", 100)]
    );
    let replaced: Vec<(String, Option<i64>)> = store
        .conn
        .prepare("SELECT license_id, replaced_at FROM licenses ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        replaced,
        vec![
            ("L1".to_string(), Some(200)),
            ("L2".to_string(), Some(300)),
            ("L3".to_string(), None),
        ]
    );
}

#[test]
fn history_is_in_install_order_even_when_the_clock_went_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&db_in(&dir));
    store.install_license(&lic("L1", 500)).unwrap();
    store.install_license(&lic("L2", 100)).unwrap();
    store.install_license(&lic("L3", 300)).unwrap();
    assert_eq!(
        store.license_history().unwrap(),
        vec![lic("L2", 100), lic("L1", 500)]
    );
}

#[test]
fn remove_makes_the_agent_unlicensed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    store.install_license(&lic("L1", 100)).unwrap();
    store.remove_license(150).unwrap();
    assert_eq!(store.current_license().unwrap(), None);
    assert_eq!(store.license_history().unwrap(), vec![lic("L1", 100)]);
    // A second remove has nothing to do.
    store.remove_license(160).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(store.current_license().unwrap(), None);
    let replaced_at: i64 = store
        .conn
        .query_row("SELECT replaced_at FROM licenses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(replaced_at, 150);
}

#[test]
fn schema_refuses_two_current_licenses() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&db_in(&dir));
    store.install_license(&lic("L1", 1)).unwrap();
    let second = store.conn.execute(
        "INSERT INTO licenses (license_id, armored, installed_at, current) VALUES ('x', 'x', 2, 1)",
        [],
    );
    assert!(second.is_err());
}

#[test]
fn clock_mark_never_decreases() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    assert_eq!(store.clock_mark().unwrap(), 0);
    assert_eq!(store.advance_clock_mark(1000).unwrap(), 1000);
    assert_eq!(store.advance_clock_mark(900).unwrap(), 1000);
    assert_eq!(store.clock_mark().unwrap(), 1000);
    assert_eq!(store.advance_clock_mark(1001).unwrap(), 1001);
    drop(store);
    let mut store = open(&path);
    assert_eq!(store.clock_mark().unwrap(), 1001);
    assert_eq!(store.advance_clock_mark(5).unwrap(), 1001);
}

#[test]
fn settings_set_replace_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&db_in(&dir));
    assert_eq!(store.setting("k").unwrap(), None);
    store.set_setting("k", Some("one")).unwrap();
    store.set_setting("k", Some("two")).unwrap();
    store.set_setting("other", Some("x")).unwrap();
    assert_eq!(store.setting("k").unwrap().as_deref(), Some("two"));
    store.set_setting("k", None).unwrap();
    assert_eq!(store.setting("k").unwrap(), None);
    assert_eq!(store.setting("other").unwrap().as_deref(), Some("x"));
    // Deleting a missing key is fine.
    store.set_setting("k", None).unwrap();
}

#[test]
fn garbage_file_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let garbage = junk(8192, 0x5eed);
    fs::write(&path, &garbage).unwrap();

    let (mut store, report) = Store::open(&path).unwrap();
    let moved = report.moved_aside.clone().expect("moved aside");
    let reason = report.corruption.clone().expect("a reason");
    assert!(reason.contains("not a database"), "{reason}");
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    let stamp = name.strip_prefix("licagent.db.corrupt-").expect(&name);
    assert!(stamp.parse::<u64>().is_ok(), "{name}");
    assert_eq!(fs::read(&moved).unwrap(), garbage);

    // The fresh database works and is private.
    store.install_license(&lic("L1", 1)).unwrap();
    drop(store);
    assert_eq!(open(&path).current_license().unwrap(), Some(lic("L1", 1)));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn move_aside_takes_the_companions_along() {
    // (SQLite itself deletes a WAL it cannot use when the connection closes,
    // so this stages the files directly.) A WAL or journal left next to the
    // fresh database would be played into it.
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    fs::write(&path, b"db").unwrap();
    for c in COMPANIONS {
        fs::write(with_suffix(&path, c), c).unwrap();
    }
    let moved = move_aside(&path).unwrap();
    assert_eq!(fs::read(&moved).unwrap(), b"db");
    for c in COMPANIONS {
        assert!(!with_suffix(&path, c).exists(), "{c} left behind");
        assert_eq!(fs::read(with_suffix(&moved, c)).unwrap(), c.as_bytes());
    }
    assert!(!path.exists());
}

#[test]
fn second_move_aside_in_the_same_second_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    fs::write(&path, junk(8192, 1)).unwrap();
    let first = move_aside(&path).unwrap();
    fs::write(&path, junk(8192, 2)).unwrap();
    let second = move_aside(&path).unwrap();
    assert_ne!(first, second);
    assert_eq!(fs::read(&first).unwrap(), junk(8192, 1));
    assert_eq!(fs::read(&second).unwrap(), junk(8192, 2));
}

#[test]
fn overwritten_page_is_caught_and_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut store = open(&path);
    for i in 0..300 {
        let mut l = lic(&format!("L{i}"), i);
        l.armored.push_str(&"x".repeat(1000));
        store.install_license(&l).unwrap();
    }
    drop(store);
    // Closing the last connection checkpoints the WAL into the main file, so
    // the page overwritten below is the one SQLite will read.
    assert!(!with_suffix(&path, "-wal").exists());
    assert!(fs::metadata(&path).unwrap().len() > 4096 * 20);

    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(4096 * 2)).unwrap();
    f.write_all(&junk(4096, 0xbad)).unwrap();
    drop(f);

    let (store, report) = Store::open(&path).unwrap();
    assert!(report.moved_aside.is_some(), "{report:?}");
    assert!(report.corruption.is_some());
    assert_eq!(store.current_license().unwrap(), None);
    assert_eq!(files_named(dir.path(), "licagent.db.corrupt").len(), 1);
}

#[test]
fn missing_directory_is_an_error_not_a_move() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("licagent.db");
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Create { .. }), "{err:?}");
    assert!(!dir.path().join("absent").exists());
}

#[test]
fn a_directory_at_the_path_is_an_error_not_a_move() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    fs::create_dir(&path).unwrap();
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(path.is_dir());
    assert_eq!(
        files_named(dir.path(), "licagent.db.corrupt"),
        Vec::<String>::new()
    );
}

#[test]
fn unreadable_file_is_an_error_not_a_move() {
    if nix::unistd::geteuid().is_root() {
        // Root reads through file modes; the case cannot be staged.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    drop(open(&path));
    fs::set_permissions(&path, Permissions::from_mode(0o000)).unwrap();
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert_eq!(
        files_named(dir.path(), "licagent.db.corrupt"),
        Vec::<String>::new()
    );
}

// --- crash atomicity, with a real SIGKILL -----------------------------------

/// Set (to the database path) in the child process of the crash test.
const CRASH_CHILD_ENV: &str = "LICAGENT_STORE_CRASH_CHILD_DB";

/// Two licenses big enough to span several pages each, so that a torn write
/// would show as a mix or a truncation.
fn crash_license(which: char) -> StoredLicense {
    let line = which.to_string().repeat(64);
    let body = vec![line; 80].join("\n");
    StoredLicense {
        license_id: which.to_string(),
        armored: format!(
            "-----BEGIN LICAGENT LICENSE-----\n{body}\n-----END LICAGENT LICENSE-----\n"
        ),
        installed_at: 1,
    }
}

fn assert_whole(l: &StoredLicense) {
    let expected = match l.license_id.as_str() {
        "A" => crash_license('A'),
        "B" => crash_license('B'),
        other => panic!("unexpected license {other:?}"),
    };
    assert_eq!(l.armored, expected.armored, "torn license {}", l.license_id);
}

/// The child half of [`crash_mid_install_keeps_one_whole_license`]: installs
/// A and B alternately until killed.
#[test]
#[ignore = "child process of crash_mid_install_keeps_one_whole_license"]
fn crash_child_installs_until_killed() {
    let Some(db) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let (mut store, _) = Store::open(Path::new(&db)).unwrap();
    let (a, b) = (crash_license('A'), crash_license('B'));
    println!("ready");
    // Bounded, in case the parent died before killing us.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    while Instant::now() < deadline {
        store
            .install_license(if n % 2 == 0 { &b } else { &a })
            .unwrap();
        n += 1;
    }
}

/// `exe` behind the emulator named in `LICAGENT_TEST_RUNNER`, if any: under
/// cargo's qemu runner for an ARM target (`.cargo/config.toml`), this test
/// binary is emulated but cannot exec an ARM binary by itself.
fn runner_command(exe: &std::path::Path) -> Command {
    let runner = std::env::var("LICAGENT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

#[test]
fn crash_mid_install_keeps_one_whole_license() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    open(&path).install_license(&crash_license('A')).unwrap();

    // Test names inside the binary have no crate prefix.
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let child_test = format!("{module}::crash_child_installs_until_killed");
    let exe = std::env::current_exe().unwrap();

    let started = Instant::now();
    let mut rounds = 0;
    for round in 0..30u64 {
        if started.elapsed() > Duration::from_secs(12) {
            break;
        }
        let mut child = runner_command(&exe)
            .args([&child_test, "--exact", "--nocapture", "--include-ignored"])
            .env(CRASH_CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) if l == "ready" => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child never started installing");
        }
        // Spread the kill over the loop: 20..200 ms after it started.
        std::thread::sleep(Duration::from_millis(20 + (round * 61) % 181));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();

        let store = open(&path);
        let current = store.current_license().unwrap().expect("a current license");
        assert_whole(&current);
        assert_eq!(
            integrity_problems(&store.conn).unwrap(),
            Vec::<String>::new()
        );
        rounds += 1;
    }
    assert!(rounds >= 10, "only {rounds} rounds ran");

    let store = open(&path);
    let history = store.license_history().unwrap();
    // The children did install (one row per install), and every row is whole.
    assert!(history.len() > rounds, "{} rows", history.len());
    history.iter().for_each(assert_whole);
    let current: i64 = store
        .conn
        .query_row("SELECT count(*) FROM licenses WHERE current = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(current, 1);
}

#[test]
fn history_is_bounded_to_the_newest_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&db_in(&dir));
    let n = HISTORY_KEPT + 10;
    for i in 0..=n {
        store.install_license(&lic(&format!("L{i}"), i)).unwrap();
    }
    let history = store.license_history().unwrap();
    assert_eq!(history.len() as i64, HISTORY_KEPT);
    assert_eq!(history[0].license_id, format!("L{}", n - 1));
    assert_eq!(
        store.current_license().unwrap().unwrap().license_id,
        format!("L{n}")
    );
}
