//! The page's security rules with the real daemon and the real
//! `licagent ui` (docs/ui.md): the daemon's `/ui/` on its socket and the
//! CSRF rules of `/ui/api/`, `/v1/` still refusing browsers, the login
//! code and session cookie of `licagent ui`, its refusal of non-loopback
//! addresses, and a reader that cannot change anything. The browser half
//! is scripts/ui-test.sh.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;

use common::http::{self, Answer};
use common::*;

/// The daemon's socket with browser-like headers.
fn socket_req(env: &Env, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    http::request(&env.socket, method, path, headers, b"")
}

#[test]
fn the_daemon_serves_the_page_under_ui_with_safe_headers() {
    let env = Env::new();
    env.write_config("");
    let mut d = env.start();
    d.await_ready();

    let a = socket_req(&env, "GET", "/ui/", &[]);
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").unwrap().starts_with("text/html"));
    let page = String::from_utf8_lossy(&a.body);
    assert!(page.contains("Activation / Licenses"), "{page}");
    // Nothing from another host: no CDN, no absolute URL in the page.
    assert!(!page.contains("http://") && !page.contains("https://"));
    let csp = a.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(a.header("x-frame-options"), Some("SAMEORIGIN"));
    for (name, ctype) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let a = socket_req(&env, "GET", &format!("/ui/{name}"), &[]);
        assert_eq!(a.status, 200, "{name}");
        assert!(a.header("content-type").unwrap().starts_with(ctype));
    }
    assert_eq!(socket_req(&env, "GET", "/ui/nope.js", &[]).status, 404);
    assert_eq!(socket_req(&env, "POST", "/ui/", &[]).status, 405);
    d.stop();
}

#[test]
fn ui_api_takes_the_pages_own_calls_and_v1_still_refuses_browsers() {
    let env = Env::new();
    env.write_config("");
    let mut d = env.start();
    d.await_ready();
    let page = [
        ("Host", "pbx.example:8443"),
        ("Origin", "https://pbx.example:8443"),
        ("Referer", "https://pbx.example:8443/licenses/"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let a = http::request(&env.socket, "GET", "/ui/api/v1/status", &page[1..], b"");
    // The Host above is the test client's "licagent": another origin.
    assert_eq!((a.status, a.code()), (403, "origin_refused".to_string()));
    let a = raw(&env, "GET", "/ui/api/v1/status", &page, b"");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["state"], "unlicensed");

    // Everything under /v1/ still refuses Origin and Referer.
    for h in [&page[..2], &[page[0], page[2]][..]] {
        let a = raw(&env, "GET", "/v1/status", h, b"");
        assert_eq!((a.status, a.code()), (403, "origin_refused".to_string()));
    }
    d.stop();
}

#[test]
fn ui_api_refuses_other_sites_and_changes_without_the_ui_header() {
    let env = Env::new();
    env.write_config("");
    let mut d = env.start();
    d.await_ready();
    let host = ("Host", "pbx.example");
    // Another origin, read or change.
    for method in ["GET", "POST"] {
        let a = raw(
            &env,
            method,
            "/ui/api/v1/test-mode/start",
            &[
                host,
                ("Origin", "https://evil.example"),
                ("X-Licagent-UI", "1"),
            ],
            b"",
        );
        assert_eq!((a.status, a.code()), (403, "origin_refused".to_string()));
    }
    // The browser says another site sent it.
    let a = raw(
        &env,
        "GET",
        "/ui/api/v1/status",
        &[host, ("Sec-Fetch-Site", "cross-site")],
        b"",
    );
    assert_eq!((a.status, a.code()), (403, "origin_refused".to_string()));
    // A change without X-Licagent-UI: what a cross-site form would send.
    let a = raw(
        &env,
        "POST",
        "/ui/api/v1/test-mode/start",
        &[host, ("Origin", "https://pbx.example")],
        b"",
    );
    assert_eq!((a.status, a.code()), (403, "csrf_refused".to_string()));
    let st = json(&env.cli(&["status", "--json"]));
    assert!(st["test_mode"].is_null(), "{st}");
    // A CORS preflight is never approved.
    let a = raw(
        &env,
        "OPTIONS",
        "/ui/api/v1/test-mode/start",
        &[
            host,
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "x-licagent-ui"),
        ],
        b"",
    );
    assert!(a.status >= 400, "{}", a.status);
    assert!(
        a.headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-")),
        "{:?}",
        a.headers
    );
    // With the header and the page's own origin: done.
    let a = raw(
        &env,
        "POST",
        "/ui/api/v1/test-mode/start",
        &[
            host,
            ("Origin", "https://pbx.example"),
            ("X-Licagent-UI", "1"),
        ],
        b"",
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["state"], "test");
    d.stop();
}

/// A request on the socket with exactly these headers (Host included).
fn raw(env: &Env, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut s = std::os::unix::net::UnixStream::connect(&env.socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    exchange(&mut s, method, path, headers, body)
}

/// Writes one HTTP/1.1 request (Connection: close) and reads the answer.
fn exchange(
    s: &mut (impl Read + Write),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: all[split + 4..].to_vec(),
    }
}

/// A running `licagent ui`: its address, its lines on stdout.
struct Ui {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Ui {
    /// Starts `licagent ui --listen 127.0.0.1:0`, as `uid` if given (from a
    /// copy of the binary that uid can run).
    fn start(env: &Env, uid: Option<u32>) -> Ui {
        let mut cmd = match uid {
            Some(uid) => {
                use std::os::unix::process::CommandExt;
                let copy = env.dir.path().join("licagent-ui-bin");
                if !copy.exists() {
                    std::fs::copy(BIN, &copy).unwrap();
                    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                        .unwrap();
                }
                let mut c = command(copy.to_str().unwrap());
                c.uid(uid).gid(uid);
                c
            }
            None => command(BIN),
        };
        let addr_file = env.dir.path().join("ui.addr");
        cmd.arg("--config").arg(&env.config).arg("ui");
        cmd.args(["--listen", "127.0.0.1:0"]);
        if uid.is_none() {
            cmd.arg("--addr-file").arg(&addr_file);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = spawn(&mut cmd);
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut ui = Ui {
            child,
            addr: String::new(),
            lines,
            printed: Vec::new(),
        };
        let url = ui.await_line("http://");
        ui.addr = url
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string();
        if uid.is_none() {
            let written = std::fs::read_to_string(&addr_file).unwrap();
            assert_eq!(written.trim(), ui.addr, "--addr-file");
        }
        ui
    }

    fn await_line(&mut self, needle: &str) -> String {
        loop {
            let line = self.lines.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!("licagent ui printed no {needle:?}: {:?}", self.printed)
            });
            self.printed.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The newest login code printed.
    fn code(&mut self) -> String {
        let line = self.await_line("ogin code");
        line.rsplit(' ').next().unwrap().to_string()
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let host = ("Host", self.addr.as_str());
        let mut all = vec![host];
        all.extend_from_slice(headers);
        exchange(&mut s, method, path, &all, body)
    }

    /// Logs in with `code`; the answer.
    fn login(&self, code: &str) -> Answer {
        let body = serde_json::json!({ "code": code }).to_string();
        self.req(
            "POST",
            "/ui/login",
            &[("X-Licagent-UI", "1"), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name=value` of a Set-Cookie header.
fn cookie_of(a: &Answer) -> String {
    let set = a.header("set-cookie").expect("a Set-Cookie header");
    set.split(';').next().unwrap().to_string()
}

#[test]
fn licagent_ui_needs_its_one_time_code_and_sets_a_strict_session_cookie() {
    let env = Env::new();
    env.write_config("");
    let mut d = env.start();
    d.await_ready();
    let mut ui = Ui::start(&env, None);
    let code = ui.code();
    // The URL it prints carries no secret.
    assert!(!ui.printed[0].contains(&code), "{:?}", ui.printed);

    // The files need no login; the API does.
    assert_eq!(ui.req("GET", "/ui/", &[], b"").status, 200);
    let a = ui.req("GET", "/ui/api/v1/status", &[], b"");
    assert_eq!((a.status, a.code()), (401, "login_required".to_string()));
    // A login without the page's header is what a form elsewhere sends.
    let body = serde_json::json!({ "code": code }).to_string();
    let a = ui.req("POST", "/ui/login", &[], body.as_bytes());
    assert_eq!((a.status, a.code()), (403, "csrf_refused".to_string()));
    let a = ui.login("ZZZZZ-ZZZZZ");
    assert_eq!((a.status, a.code()), (401, "login_failed".to_string()));
    assert!(a.header("set-cookie").is_none());

    let a = ui.login(&code.to_lowercase());
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let set = a.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    // A session cookie: it ends with the browser or with `licagent ui`.
    assert!(
        !set.contains("Expires") && !set.contains("Max-Age"),
        "{set}"
    );
    let cookie = cookie_of(&a);
    let (name, token) = cookie.split_once('=').unwrap();
    assert!(name.starts_with("licagent_ui_"), "{name}");
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "at least 128 random bits: {token}"
    );

    // The code worked once.
    let a = ui.login(&code);
    assert_eq!((a.status, a.code()), (401, "login_failed".to_string()));
    let next = ui.code();
    assert_ne!(next, code);

    let a = ui.req("GET", "/ui/api/v1/whoami", &[("Cookie", &cookie)], b"");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["may_change"], true);
    let forged = format!("{name}={}", "0".repeat(64));
    let a = ui.req("GET", "/ui/api/v1/status", &[("Cookie", &forged)], b"");
    assert_eq!(a.status, 401);

    // The session acts for the runner; the CSRF rules still hold.
    let a = ui.req(
        "POST",
        "/ui/api/v1/test-mode/start",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!((a.status, a.code()), (403, "csrf_refused".to_string()));
    let evil = ui.req(
        "POST",
        "/ui/api/v1/test-mode/start",
        &[
            ("Cookie", &cookie),
            ("X-Licagent-UI", "1"),
            ("Origin", "http://127.0.0.1:1"),
        ],
        b"",
    );
    assert_eq!(evil.code(), "origin_refused");
    let origin = format!("http://{}", ui.addr);
    let a = ui.req(
        "POST",
        "/ui/api/v1/test-mode/start",
        &[
            ("Cookie", &cookie),
            ("X-Licagent-UI", "1"),
            ("Origin", &origin),
        ],
        b"",
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["state"], "test");

    // Another name for this port (DNS rebinding) is refused.
    let mut s = TcpStream::connect(&ui.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let a = exchange(
        &mut s,
        "GET",
        "/ui/api/v1/status",
        &[("Host", "evil.example"), ("Cookie", &cookie)],
        b"",
    );
    assert_eq!((a.status, a.code()), (403, "host_refused".to_string()));

    // Sessions live in the process: a new `licagent ui` knows none.
    ui.stop();
    let ui = Ui::start(&env, None);
    let again = format!(
        "licagent_ui_{}={token}",
        ui.addr.rsplit(':').next().unwrap()
    );
    let a = ui.req("GET", "/ui/api/v1/status", &[("Cookie", &again)], b"");
    assert_eq!(a.status, 401);
    ui.stop();

    // Neither the code nor the session is in the daemon's log.
    let log = d.log();
    assert!(!log.contains(&code) && !log.contains(token), "{log}");
    d.stop();
}

#[test]
fn wrong_codes_retire_the_login_code() {
    let env = Env::new();
    env.write_config("");
    let mut d = env.start();
    d.await_ready();
    let mut ui = Ui::start(&env, None);
    let code = ui.code();
    for _ in 0..licagent::ui::serve::MAX_FAILURES {
        assert_eq!(ui.login("00000-00000").status, 401);
    }
    let next = ui.code();
    assert_ne!(next, code);
    assert_eq!(ui.login(&code).status, 401);
    assert_eq!(ui.login(&next).status, 200);
    ui.stop();
    d.stop();
}

#[test]
fn licagent_ui_refuses_a_non_loopback_address_without_listen_public() {
    let env = Env::new();
    env.write_config("");
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.10:8080"] {
        let o = env.cli(&["ui", "--listen", listen]);
        assert_eq!(o.status.code(), Some(5), "{listen}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("not a loopback address") && e.contains("--listen-public"),
            "{e}"
        );
        assert!(stdout(&o).is_empty(), "no code printed: {}", stdout(&o));
    }
}

#[test]
fn a_reader_sees_the_page_but_cannot_change_anything() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run licagent ui as another uid");
        return;
    }
    let env = Env::new();
    env.write_config("");
    let mut d = env.start();
    d.await_ready();
    let nobody = 65534;
    let mut ui = Ui::start(&env, Some(nobody));
    let code = ui.code();
    let cookie = cookie_of(&ui.login(&code));
    let a = ui.req("GET", "/ui/api/v1/whoami", &[("Cookie", &cookie)], b"");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let me = a.json();
    assert_eq!(me["uid"], nobody);
    assert_eq!(me["may_change"], false);
    assert_eq!(
        ui.req("GET", "/ui/api/v1/status", &[("Cookie", &cookie)], b"")
            .status,
        200
    );
    let origin = format!("http://{}", ui.addr);
    for path in [
        "/ui/api/v1/test-mode/start",
        "/ui/api/v1/refresh",
        "/ui/api/v1/deactivate",
    ] {
        let a = ui.req(
            "POST",
            path,
            &[
                ("Cookie", &cookie),
                ("X-Licagent-UI", "1"),
                ("Origin", &origin),
            ],
            b"",
        );
        assert_eq!(
            (a.status, a.code()),
            (403, "access_denied".to_string()),
            "{path}"
        );
    }
    let st = json(&env.cli(&["status", "--json"]));
    assert!(st["test_mode"].is_null(), "{st}");
    ui.stop();
    d.stop();
}
