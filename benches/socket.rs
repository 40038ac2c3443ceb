//! Figures for the API socket under abuse, with the real daemon: how fast
//! root's status and the PBX's entitlement checks answer while a
//! socket-group user holds 2,000 hostile connections (idle, slow headers,
//! stalled bodies), with a baseline in the same run; and the daemon's
//! resident memory around 200 concurrent 1 MiB requests (from an
//! unprivileged caller, whose bodies are thrown away, and from root, whose
//! bodies are read) and 10 s after they end.
//!
//! A plain program that prints its figures; it needs root (to act as the
//! other users): `cargo bench --bench socket`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{drop_to, Env};

const CHILD_ENV: &str = "LICAGENT_SOCKET_BENCH_CHILD";
const HOSTILE_UID: u32 = 65534;
const PBX_UID: u32 = 65533;
const HOSTILE: usize = 2000;
const CHECKS: usize = 200;

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return child(&mode);
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("socket bench: needs root (it acts as other users); nothing measured");
        return;
    }
    let env = Env::new();
    let mut daemon = env.start();
    daemon.await_ready();
    let file = env.file("good.lic", &env.sign(&env.payload()));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());
    for i in 0..20 {
        let (id, ext) = (format!("u{i}"), format!("{}", 200 + i));
        let out = env.cli(&["users", "add", &id, "--name", &id, "--extension", &ext]);
        assert!(out.status.success());
    }
    let pid = daemon.child.id();

    println!("socket bench: {HOSTILE} hostile connections from uid {HOSTILE_UID}; figures in ms");
    report("baseline", &env.socket);
    let mut hostile = spawn_child("hold", HOSTILE_UID, &env.socket);
    let refused = hostile.line("refused=");
    hostile.line("held");
    println!("  hostile connections refused at the cap: {refused} of {HOSTILE}");
    report("under attack", &env.socket);
    drop(hostile);

    println!("memory: daemon RSS in MiB (pid {pid})");
    for (who, uid) in [("socket-group user", Some(HOSTILE_UID)), ("root", None)] {
        let before = rss_mib(pid);
        let mut flood = match uid {
            Some(uid) => spawn_child("bodies", uid, &env.socket),
            None => spawn_child("bodies-root", 0, &env.socket),
        };
        let peak = std::thread::spawn(move || {
            let mut peak = 0.0f64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        let answers = flood.line("answers=");
        drop(flood);
        std::thread::sleep(Duration::from_secs(10));
        let after = rss_mib(pid);
        let peak = peak.join().unwrap();
        println!(
            "  200 x 1 MiB from {who}: before {before:.1}, peak {peak:.1}, 10 s after the end {after:.1} ({:+.0} %), answers {answers}",
            (after - before) / before * 100.0
        );
    }
    daemon.stop();
}

/// Prints root's status and the PBX's entitlement check latencies.
fn report(label: &str, socket: &Path) {
    let root = latencies(socket, "/v1/status", CHECKS);
    let mut pbx = spawn_child("checks", PBX_UID, socket);
    let pbx_line = pbx.line("latencies=");
    drop(pbx);
    let cli = {
        let start = Instant::now();
        let out = Command::new(common::BIN)
            .arg("--socket")
            .arg(socket)
            .arg("status")
            .output()
            .unwrap();
        assert!(out.status.success(), "root's licagent status failed");
        start.elapsed().as_secs_f64() * 1000.0
    };
    println!(
        "  {label}: root GET /v1/status {}; PBX (uid {PBX_UID}) GET /v1/entitlement {pbx_line}; root `licagent status` (process included) {cli:.1}",
        summary(&root)
    );
}

fn summary(ms: &[f64]) -> String {
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "median {:.2}, p99 {:.2}, max {:.2} ({} calls)",
        p(0.5),
        p(0.99),
        v[v.len() - 1],
        v.len()
    )
}

fn latencies(socket: &Path, path: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            let status = get(socket, path);
            assert_eq!(status, 200, "GET {path}");
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// One GET on a fresh connection; the status code.
fn get(socket: &Path, path: &str) -> u16 {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Child {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Child {
    fn line(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("the child ended without {prefix:?}");
            }
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_child(mode: &str, uid: u32, socket: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, mode)
        .env("BENCH_UID", uid.to_string())
        .env("BENCH_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    Child { child, out }
}

fn child(mode: &str) {
    let uid: u32 = std::env::var("BENCH_UID").unwrap().parse().unwrap();
    let socket = PathBuf::from(std::env::var("BENCH_SOCKET").unwrap());
    if uid != 0 {
        drop_to(uid, &[]).expect("drop to the bench uid");
    }
    match mode {
        "hold" => {
            let mut held = Vec::new();
            for i in 0..HOSTILE {
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    continue;
                };
                let _ = match i % 3 {
                    0 => Ok(()),
                    1 => s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\n"),
                    _ => s.write_all(
                        b"POST /v1/users HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{",
                    ),
                };
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(500));
            let mut refused = 0;
            for s in &mut held {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 16];
                if matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 503")) {
                    refused += 1;
                }
            }
            println!("refused={refused}");
            println!("held");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        "checks" => {
            let ms = latencies(&socket, "/v1/entitlement?user=u3", CHECKS);
            println!("latencies={}", summary(&ms));
        }
        "bodies" | "bodies-root" => {
            let threads: Vec<_> = (0..200)
                .map(|_| {
                    let socket = socket.clone();
                    std::thread::spawn(move || {
                        let body = vec![b'x'; 1024 * 1024 - 1];
                        let Ok(mut s) = UnixStream::connect(&socket) else {
                            return 0;
                        };
                        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                        let head = format!(
                            "POST /v1/license HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(&body);
                        let mut text = String::new();
                        let _ = s.read_to_string(&mut text);
                        text.split_whitespace()
                            .nth(1)
                            .and_then(|c| c.parse::<u16>().ok())
                            .unwrap_or(0)
                    })
                })
                .collect();
            let mut counts = std::collections::BTreeMap::new();
            for t in threads {
                *counts.entry(t.join().unwrap_or(0)).or_insert(0) += 1;
            }
            println!("answers={counts:?}");
        }
        other => panic!("unknown mode {other}"),
    }
}
