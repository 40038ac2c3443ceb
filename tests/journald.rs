//! What the daemon writes to journald: the real daemon, in a mount namespace
//! of its own whose /run/systemd/journal/socket is a datagram socket of this
//! test (no journald runs on these machines). Checks the native records:
//! PRIORITY by severity, a MESSAGE_ID per kind of event, field values as
//! plain words, and a change to expired logged as a warning.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use licagent::daemon::logging::message_id;

/// One journal record: its fields.
type Record = BTreeMap<String, String>;

/// Parses journald's native protocol: `KEY=value\n`, or `KEY\n` followed by
/// a little-endian u64 length, the bytes and `\n` (values with newlines).
fn parse(mut data: &[u8]) -> Record {
    let mut out = Record::new();
    while !data.is_empty() {
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            if rest.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..(8 + len).min(rest.len())];
            out.insert(key, String::from_utf8_lossy(value).into_owned());
            data = rest.get(8 + len + 1..).unwrap_or(&[]);
        }
    }
    out
}

struct Journal {
    socket: UnixDatagram,
    records: Vec<Record>,
}

impl Journal {
    fn read(&mut self) {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if n > 0 {
                self.records.push(parse(&buf[..n]));
            }
        }
    }

    /// Waits for a record matching `pred`.
    fn wait(&mut self, what: &str, pred: impl Fn(&Record) -> bool) -> Record {
        let start = Instant::now();
        loop {
            self.read();
            if let Some(r) = self.records.iter().find(|r| pred(r)) {
                return r.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no journal record for {what}; got {:#?}",
                self.records
            );
        }
    }
}

#[test]
fn journal_records_carry_priority_message_id_and_plain_fields() {
    let root = nix::unistd::Uid::effective().is_root();
    let unshare = std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !unshare {
        eprintln!("SKIPPED: needs root and unshare for a private /run (CI runs as root)");
        return;
    }
    let env = Env::new();
    let jdir = env.dir.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let socket = UnixDatagram::bind(jdir.join("socket")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut journal = Journal {
        socket,
        records: Vec::new(),
    };
    let jdir_s = jdir.to_str().unwrap().to_string();
    let mut d = Daemon::start_cmd(&env, &[("JOURNAL_STREAM", "8:1")], move |cmd| {
        // A private /run whose journal socket is this test's.
        let prog = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut u = std::process::Command::new("unshare");
        u.args(["-m", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
                 mount --bind {jdir_s} /run/systemd/journal && exec \"$0\" \"$@\""
            ))
            .arg(prog)
            .args(args);
        *cmd = u;
        cmd
    });
    d.await_ready();

    // At start: the state, as a word, informational (6), with its id.
    let start = journal.wait("the state at start", |r| {
        r.get("MESSAGE")
            .is_some_and(|m| m.starts_with("license state at start"))
    });
    assert_eq!(
        start.get("MESSAGE_ID").map(String::as_str),
        Some(message_id::STATE_CHANGE)
    );
    assert_eq!(
        start.get("PRIORITY").map(String::as_str),
        Some("6"),
        "{start:#?}"
    );
    assert_eq!(
        start.get("STATE").map(String::as_str),
        Some("unlicensed"),
        "{start:#?}"
    );

    // A license whose term ends in 3 seconds: active (6), then expired (4).
    let mut p = env.payload();
    p.term.ends_at = Some(licagent::time::now() + 3);
    let file = env.file("short.lic", &env.sign(&p));
    let out = env.cli(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let active = journal.wait("the change to active", |r| {
        r.get("TO").map(String::as_str) == Some("active")
    });
    assert_eq!(active.get("PRIORITY").map(String::as_str), Some("6"));
    assert_eq!(active.get("FROM").map(String::as_str), Some("unlicensed"));
    assert_eq!(
        active.get("MESSAGE_ID").map(String::as_str),
        Some(message_id::STATE_CHANGE)
    );
    let expired = journal.wait("the change to expired", |r| {
        r.get("TO").map(String::as_str) == Some("expired")
    });
    assert_eq!(
        expired.get("PRIORITY").map(String::as_str),
        Some("4"),
        "{expired:#?}"
    );

    // A refused caller: a warning (4) with its id and a plain pid.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = env.cli_as(&["import", file.to_str().unwrap()], Some(65534));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let refused = journal.wait("the refused caller", |r| {
        r.get("MESSAGE_ID").map(String::as_str) == Some(message_id::REFUSED_CALLER)
    });
    assert_eq!(refused.get("PRIORITY").map(String::as_str), Some("4"));
    assert_eq!(refused.get("UID").map(String::as_str), Some("65534"));
    let pid = refused.get("PID").cloned().unwrap_or_default();
    assert!(
        pid.parse::<u32>().is_ok(),
        "PID={pid:?} is not a plain number"
    );

    // No value anywhere is a Rust debug rendering.
    for r in &journal.records {
        for (k, v) in r {
            assert!(!v.starts_with("Some(") && !v.starts_with("None"), "{k}={v}");
        }
    }
    d.stop();
}
