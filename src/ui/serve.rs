//! `licagent ui`: the page on loopback TCP, for an admin at the box or
//! through an SSH tunnel. It is a client of the daemon's socket with the
//! rights of the user who runs it, so it must not lend those rights to
//! the other local users who can reach a loopback port: a browser logs in
//! once with a one-time code printed on the terminal, and gets a session
//! cookie that lives in this process's memory only.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixStream};

use super::gate;

/// Symbols of a login code: Crockford's base32, read-alikes left out.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a login code: 50 bits.
const CODE_LEN: usize = 10;
/// Wrong codes before the code is replaced by a new one (printed on the
/// terminal): 5 guesses of 2^-50 each per code.
pub const MAX_FAILURES: u32 = 5;
/// Session tokens: 256 random bits, hex.
const TOKEN_BYTES: usize = 32;
/// How long a connection may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type UiBody = BoxBody<Bytes, hyper::Error>;

/// What `licagent ui` was asked to do.
pub struct Options {
    pub listen: String,
    pub listen_public: bool,
    pub addr_file: Option<PathBuf>,
    pub socket: PathBuf,
}

/// The address to listen on: the first of `listen` resolved, refused when
/// not loopback unless `public` (anyone on the network could reach it,
/// without TLS).
pub fn listen_addr(listen: &str, public: bool) -> Result<SocketAddr, String> {
    let addr = match listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => listen
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "cannot use --listen {listen}: {e} (give an address such as 127.0.0.1:8080)"
                )
            })?
            .next()
            .ok_or_else(|| format!("--listen {listen} resolves to no address"))?,
    };
    if !addr.ip().is_loopback() && !public {
        return Err(format!(
            "refusing to listen on {addr}: it is not a loopback address, so other machines could reach the page (without TLS); use 127.0.0.1 and an SSH tunnel, or put --listen-public if you really mean it"
        ));
    }
    Ok(addr)
}

/// The login code and the sessions it opened.
pub struct Login {
    code: String,
    failures: u32,
    sessions: HashSet<String>,
}

/// What happened to a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The session token for the cookie; the code was used up and replaced.
    Ok { token: String, next_code: String },
    /// A wrong code; `Some(new)` when it was the last try of the old one.
    Wrong { replaced: Option<String> },
}

impl Login {
    pub fn new() -> Result<Login, String> {
        Ok(Login {
            code: new_code()?,
            failures: 0,
            sessions: HashSet::new(),
        })
    }

    /// The code as shown on the terminal: `ABCDE-FGHJK`.
    pub fn code(&self) -> String {
        format!("{}-{}", &self.code[..5], &self.code[5..])
    }

    /// Checks a typed code (any case, spaces and dashes ignored). A right
    /// code opens a session and is replaced, so it works once; too many
    /// wrong ones replace it too.
    pub fn attempt(&mut self, typed: &str) -> Result<Attempt, String> {
        let typed = normalize(typed);
        if constant_time_eq(typed.as_bytes(), self.code.as_bytes()) {
            let token = random_hex(TOKEN_BYTES)?;
            self.sessions.insert(token.clone());
            self.code = new_code()?;
            self.failures = 0;
            return Ok(Attempt::Ok {
                token,
                next_code: self.code(),
            });
        }
        self.failures += 1;
        if self.failures >= MAX_FAILURES {
            self.code = new_code()?;
            self.failures = 0;
            return Ok(Attempt::Wrong {
                replaced: Some(self.code()),
            });
        }
        Ok(Attempt::Wrong { replaced: None })
    }

    pub fn is_session(&self, token: &str) -> bool {
        self.sessions.contains(token)
    }

    pub fn end_session(&mut self, token: &str) {
        self.sessions.remove(token);
    }
}

fn normalize(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(bytes)
}

fn new_code() -> Result<String, String> {
    // 256 is a multiple of 32: masking keeps every symbol equally likely.
    Ok(random_bytes(CODE_LEN)?
        .iter()
        .map(|b| CODE_ALPHABET[(b & 31) as usize] as char)
        .collect())
}

fn random_hex(n: usize) -> Result<String, String> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Whether a Host header names this machine's loopback (any port: an SSH
/// tunnel may forward another local port). Anything else is a browser
/// sent here under another name (DNS rebinding) and is refused.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The state of one `licagent ui`.
struct Server {
    login: Mutex<Login>,
    /// Cookies are shared by every port of a host: the name carries the
    /// port, so that two `licagent ui` on one machine do not overwrite
    /// each other's session in one browser.
    cookie: String,
    socket: PathBuf,
    public: bool,
}

/// Runs until `stop` completes. Prints the address and the login code on
/// stdout (the terminal), never in a log.
pub async fn run(opts: Options, stop: impl std::future::Future<Output = ()>) -> Result<(), String> {
    let addr = listen_addr(&opts.listen, opts.listen_public)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address listened on: {e}"))?;
    let server = Arc::new(Server {
        login: Mutex::new(Login::new()?),
        cookie: format!("licagent_ui_{}", local.port()),
        socket: opts.socket.clone(),
        public: opts.listen_public,
    });
    if opts.listen_public && !local.ip().is_loopback() {
        eprintln!(
            "WARNING: licagent ui listens on {local}, which other machines can reach. There is no TLS: the login code and the session cookie cross the network in clear text. Prefer 127.0.0.1 and an SSH tunnel."
        );
    }
    if let Some(file) = &opts.addr_file {
        std::fs::write(file, format!("{local}\n"))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    let code = server
        .login
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .code();
    println!("The Activation / Licenses page: http://{local}/ui/");
    println!("Login code (once, in the page): {code}");
    eprintln!(
        "Acting with the rights of the user who runs this command, on {}. Stop with Ctrl-C; the sessions end with it.",
        opts.socket.display()
    );
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("licagent ui: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &server).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    println!("licagent ui stopped; its sessions ended.");
    Ok(())
}

fn whole(resp: Response<Full<Bytes>>) -> Response<UiBody> {
    resp.map(|b| b.map_err(|never| match never {}).boxed())
}

/// An error of `licagent ui` itself, in the API's shape. Its codes
/// (`login_required`, `login_failed`, `host_refused`, `not_running`,
/// `socket_denied`, `agent_unreachable`) are listed in docs/ui.md.
fn own_error(status: StatusCode, code: &str, message: &str) -> Response<UiBody> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    whole(super::json_response(status, body.to_string().into_bytes()))
}

async fn handle(req: Request<Incoming>, server: &Server) -> Response<UiBody> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !server.public && !loopback_host(&host) {
        return own_error(
            StatusCode::FORBIDDEN,
            "host_refused",
            &format!("this page answers only to 127.0.0.1 or localhost, not to {host:?}"),
        );
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/" | "/ui" => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SEE_OTHER;
            resp.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            whole(resp)
        }
        "/ui/login" => login(req, server).await,
        "/ui/logout" => logout(req, server),
        p if p.starts_with(super::API_PREFIX) => {
            if session(&req, server).is_none() {
                return own_error(
                    StatusCode::UNAUTHORIZED,
                    "login_required",
                    "log in with the code that `licagent ui` printed in its terminal",
                );
            }
            let change = req.method() != Method::GET && req.method() != Method::HEAD;
            if let Err(refusal) = gate::check(req.headers(), change) {
                return whole(super::refused(&refusal));
            }
            proxy(req, &server.socket).await
        }
        p if p.starts_with("/ui/") => whole(super::asset(req.method(), &p[4..])),
        _ => own_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("nothing at {path}; the page is at /ui/"),
        ),
    }
}

/// The session token of the request's cookie, if it is a live session.
fn session(req: &Request<Incoming>, server: &Server) -> Option<String> {
    let login = server.login.lock().unwrap_or_else(|p| p.into_inner());
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == server.cookie && login.is_session(value))
        .map(|(_, value)| value.to_string())
}

async fn login(req: Request<Incoming>, server: &Server) -> Response<UiBody> {
    if req.method() != Method::POST {
        return own_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "log in with POST",
        );
    }
    if let Err(refusal) = gate::check(req.headers(), true) {
        return whole(super::refused(&refusal));
    }
    let body = match Limited::new(req.into_body(), 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return own_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "a login is a few bytes",
            )
        }
    };
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
    }
    let Ok(body) = serde_json::from_slice::<Body>(&body) else {
        return own_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the login body is {\"code\": \"...\"}",
        );
    };
    let attempt = server
        .login
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .attempt(&body.code);
    match attempt {
        Err(e) => own_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e),
        Ok(Attempt::Wrong { replaced }) => {
            if let Some(new) = replaced {
                println!(
                    "{MAX_FAILURES} wrong login codes were tried; the old code no longer works. New login code: {new}"
                );
            }
            own_error(
                StatusCode::UNAUTHORIZED,
                "login_failed",
                "this is not the login code that `licagent ui` printed in its terminal (codes work once)",
            )
        }
        Ok(Attempt::Ok { token, next_code }) => {
            println!("A browser logged in; that code is used up. Login code for another browser: {next_code}");
            let cookie = format!(
                "{}={token}; HttpOnly; SameSite=Strict; Path=/",
                server.cookie
            );
            let mut resp = whole(super::json_response(
                StatusCode::OK,
                br#"{"logged_in":true}"#.to_vec(),
            ));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(SET_COOKIE, v);
            }
            resp
        }
    }
}

fn logout(req: Request<Incoming>, server: &Server) -> Response<UiBody> {
    if req.method() != Method::POST {
        return own_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "log out with POST",
        );
    }
    if let Err(refusal) = gate::check(req.headers(), true) {
        return whole(super::refused(&refusal));
    }
    if let Some(token) = session(&req, server) {
        server
            .login
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end_session(&token);
    }
    let mut resp = whole(super::json_response(
        StatusCode::OK,
        br#"{"logged_in":false}"#.to_vec(),
    ));
    let expired = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        server.cookie
    );
    if let Ok(v) = HeaderValue::from_str(&expired) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    resp
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// Forwards a page call to the daemon's `/ui/api/` on the socket, as is
/// (the daemon applies the CSRF rules again), without the session cookie;
/// the answer streams back (the event stream never ends by itself).
async fn proxy(req: Request<Incoming>, socket: &Path) -> Response<UiBody> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => own_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_running",
                    &format!(
                        "the daemon is not running (no socket at {}); start it with `systemctl start licagent`",
                        socket.display()
                    ),
                ),
                std::io::ErrorKind::PermissionDenied => own_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "socket_denied",
                    &format!(
                        "the user running `licagent ui` may not connect to {}: join the socket's group or run it as root",
                        socket.display()
                    ),
                ),
                _ => unreachable_agent(&e),
            };
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return unreachable_agent(&e),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (parts, body) = req.into_parts();
    let mut out = Request::builder().method(parts.method).uri(parts.uri);
    for (name, value) in &parts.headers {
        if name == "cookie" || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        out = out.header(name, value);
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => return unreachable_agent(&e),
    };
    let resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return unreachable_agent(&e),
    };
    let (mut parts, body) = resp.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    parts
        .headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    parts.headers.insert(
        hyper::header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    Response::from_parts(parts, body.boxed())
}

fn unreachable_agent(e: &dyn std::fmt::Display) -> Response<UiBody> {
    own_error(
        StatusCode::BAD_GATEWAY,
        "agent_unreachable",
        &format!("talking to the daemon failed: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_opens_one_session() {
        let mut l = Login::new().unwrap();
        let code = l.code();
        assert_eq!(code.len(), 11);
        let Attempt::Ok { token, next_code } = l.attempt(&code.to_lowercase()).unwrap() else {
            panic!("refused")
        };
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        assert!(l.is_session(&token));
        assert_ne!(next_code, code);
        assert_eq!(l.attempt(&code).unwrap(), Attempt::Wrong { replaced: None });
        l.end_session(&token);
        assert!(!l.is_session(&token));
    }

    #[test]
    fn wrong_codes_replace_the_code_after_the_limit() {
        let mut l = Login::new().unwrap();
        let code = l.code();
        for _ in 1..MAX_FAILURES {
            assert_eq!(
                l.attempt("00000-00000").unwrap(),
                Attempt::Wrong { replaced: None }
            );
        }
        let Attempt::Wrong {
            replaced: Some(new),
        } = l.attempt("00000-00000").unwrap()
        else {
            panic!("not replaced")
        };
        assert_ne!(new, code);
        // The old code no longer opens a session.
        assert!(matches!(l.attempt(&code).unwrap(), Attempt::Wrong { .. }));
    }

    #[test]
    fn only_loopback_addresses_unless_public() {
        assert!(listen_addr("127.0.0.1:0", false).is_ok());
        assert!(listen_addr("[::1]:0", false).is_ok());
        let e = listen_addr("0.0.0.0:8080", false).unwrap_err();
        assert!(e.contains("--listen-public"), "{e}");
        assert!(listen_addr("192.0.2.1:8080", false).is_err());
        assert!(listen_addr("0.0.0.0:8080", true).is_ok());
        assert!(listen_addr("nonsense", false).is_err());
    }

    #[test]
    fn hosts_of_loopback_only() {
        for h in [
            "127.0.0.1:8080",
            "localhost:9000",
            "LOCALHOST",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:8080",
            "192.0.2.1:8080",
            "",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}
