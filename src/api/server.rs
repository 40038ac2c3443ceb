//! The socket server: accepts connections, reads the peer's credentials,
//! and routes each request through one handler table.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::auth::{Peer, Policy};
use super::types::ErrorBody;
use super::types::{ActivateBody, RequestCodeAnswer, RequestCodeBody, Status, TrialBody};
use crate::config::Config;
use crate::daemon::agent::{Agent, ImportError, TestModeError};
use crate::daemon::link::{Link, LinkError};
use crate::license::LicenseError;
use crate::portal::PortalError;

/// Largest request body accepted (a license file is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// A bulk import may be as large as the CSV limit, plus slack so that the
/// CSV parser (not the transport) says what is wrong with a file just over.
const MAX_IMPORT_BODY: usize = crate::seats::csv::MAX_BYTES + 64 * 1024;

/// How long a connection may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
pub struct Shared {
    pub agent: Arc<Agent>,
    pub link: Arc<Link>,
    /// Replaced on config reload.
    pub config: RwLock<Config>,
    /// Replaced on config reload.
    pub policy: RwLock<Policy>,
}

pub(super) type Resp = Response<Full<Bytes>>;

/// Serves until `shutdown` turns true. Connections in flight finish on
/// their own; new ones are no longer accepted.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                warn!("accept on the API socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                warn!("cannot read the caller's credentials, dropping the connection: {e}");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, peer, &shared).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!("API connection ended: {e}");
            }
        });
    }
}

/// Routes one request: origin check, authorization, body, handler.
async fn handle(req: Request<Incoming>, peer: Peer, shared: &Shared) -> Resp {
    // A browser page must never drive the agent (the socket is local, but a
    // proxy in front of it could forward browser requests).
    if req.headers().contains_key("origin") || req.headers().contains_key("referer") {
        return error(StatusCode::FORBIDDEN, "requests from web pages are refused");
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = super::users::Query::parse(req.uri().query().unwrap_or(""));
    let route = match Route::of(&method, &path) {
        Ok(r) => r,
        Err(status) if status == StatusCode::METHOD_NOT_ALLOWED => {
            return error(status, &format!("{method} is not allowed on {path}"));
        }
        Err(status) => return error(status, &format!("no such API path: {path}")),
    };
    // Reads are open to whoever may connect; everything else changes state.
    if method != Method::GET {
        let verdict = shared
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .may_change(&peer);
        if let Err(why) = verdict {
            warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, %method, %path, "refused: {why}");
            return error(
                StatusCode::FORBIDDEN,
                "access denied: changing the license or the users needs root or the admin group",
            );
        }
    }
    let limit = if route == Route::UsersImport {
        MAX_IMPORT_BODY
    } else {
        MAX_BODY
    };
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {limit} bytes"),
            )
        }
    };
    let agent = &shared.agent;
    let link = &shared.link;
    match route {
        Route::Status => json(StatusCode::OK, &status(shared)),
        Route::Hwid => json(StatusCode::OK, &agent.hardware()),
        Route::License => {
            let Ok(text) = std::str::from_utf8(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the license file is not UTF-8 text",
                );
            };
            match agent.import(text, query_flag(&query, "replace")) {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => {
                    warn!(uid = peer.uid, "license import refused: {e}");
                    error(import_status(&e), &e.to_string())
                }
            }
        }
        Route::Activate => {
            let req: ActivateBody = match parse(&body) {
                Ok(r) => r,
                Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
            };
            match link.activate(agent, &req.key, req.rehost).await {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => error(link_status(&e), &e.to_string()),
            }
        }
        Route::Refresh => match link.refresh(agent).await {
            Ok(_) => json(StatusCode::OK, &status(shared)),
            Err(e) => error(link_status(&e), &e.to_string()),
        },
        Route::RequestCode => {
            let req: RequestCodeBody = match parse(&body) {
                Ok(r) => r,
                Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
            };
            match link.request_code(agent, &req.key) {
                Ok(code) => json(StatusCode::OK, &RequestCodeAnswer { request_code: code }),
                Err(e) => error(link_status(&e), &e.to_string()),
            }
        }
        Route::Trial => match link
            .trial(agent, parse::<TrialBody>(&body).unwrap_or_default().replace)
            .await
        {
            Ok(_) => json(StatusCode::OK, &status(shared)),
            Err(e) => error(link_status(&e), &e.to_string()),
        },
        Route::Deactivate => match link.deactivate(agent).await {
            Ok(()) => match agent.remove_license() {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Err(e) => error(link_status(&e), &e.to_string()),
        },
        Route::TestModeStart => {
            let secs = shared
                .config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .test_mode
                .duration_secs as i64;
            test_mode(shared, agent.start_test_mode(secs))
        }
        Route::TestModeStop => test_mode(shared, agent.stop_test_mode()),
        Route::Users
        | Route::User(_)
        | Route::UserProfile(_)
        | Route::UserAddons(_)
        | Route::UserAddon(..)
        | Route::UsersImport
        | Route::Entitlement
        | Route::Seats
        | Route::Audit
        | Route::Export
        | Route::Restore => super::users::handle(agent, &method, route, &query, &body, peer),
    }
}

/// Every path the API knows. Parsed once per request from method and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Status,
    Hwid,
    License,
    Activate,
    Refresh,
    RequestCode,
    Trial,
    Deactivate,
    TestModeStart,
    TestModeStop,
    Users,
    User(String),
    UserProfile(String),
    UserAddons(String),
    UserAddon(String, String),
    UsersImport,
    Entitlement,
    Seats,
    Audit,
    Export,
    Restore,
}

impl Route {
    /// The handler table: which methods each path takes. `Err` is 404 for
    /// an unknown path, 405 for a known path with another method.
    fn of(method: &Method, path: &str) -> Result<Route, StatusCode> {
        use Method as M;
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(super::users::percent_decode)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let (route, allowed): (Route, &[Method]) = match segs.as_slice() {
            ["v1", "status"] => (Route::Status, &[M::GET]),
            ["v1", "hwid"] => (Route::Hwid, &[M::GET]),
            ["v1", "license"] => (Route::License, &[M::POST]),
            ["v1", "activate"] => (Route::Activate, &[M::POST]),
            ["v1", "refresh"] => (Route::Refresh, &[M::POST]),
            // It carries the PBX key: not for every reader.
            ["v1", "request-code"] => (Route::RequestCode, &[M::POST]),
            ["v1", "trial"] => (Route::Trial, &[M::POST]),
            ["v1", "deactivate"] => (Route::Deactivate, &[M::POST]),
            ["v1", "test-mode", "start"] => (Route::TestModeStart, &[M::POST]),
            ["v1", "test-mode", "stop"] => (Route::TestModeStop, &[M::POST]),
            ["v1", "users"] => (Route::Users, &[M::GET, M::POST]),
            ["v1", "users", "import"] => (Route::UsersImport, &[M::POST]),
            ["v1", "users", id] => (Route::User(id.to_string()), &[M::GET, M::PATCH, M::DELETE]),
            ["v1", "users", id, "profile"] => {
                (Route::UserProfile(id.to_string()), &[M::PUT, M::DELETE])
            }
            ["v1", "users", id, "addons"] => (Route::UserAddons(id.to_string()), &[M::POST]),
            ["v1", "users", id, "addons", code] => (
                Route::UserAddon(id.to_string(), code.to_string()),
                &[M::DELETE],
            ),
            ["v1", "entitlement"] => (Route::Entitlement, &[M::GET]),
            ["v1", "seats"] => (Route::Seats, &[M::GET]),
            ["v1", "audit"] => (Route::Audit, &[M::GET]),
            // A backup of every user: for admins, not for every reader.
            ["v1", "export"] => (Route::Export, &[M::POST]),
            ["v1", "restore"] => (Route::Restore, &[M::POST]),
            _ => return Err(StatusCode::NOT_FOUND),
        };
        if allowed.contains(method) {
            Ok(route)
        } else {
            Err(StatusCode::METHOD_NOT_ALLOWED)
        }
    }
}

fn test_mode(shared: &Shared, r: Result<Status, TestModeError>) -> Resp {
    match r {
        Ok(_) => json(StatusCode::OK, &status(shared)),
        Err(TestModeError::Store(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

fn status(shared: &Shared) -> Status {
    let mut s = shared.agent.status();
    s.refresh = Some(shared.link.info(&shared.agent));
    s
}

/// Whether `name`, `name=1` or `name=true` is in the query string.
fn query_flag(query: &super::users::Query, name: &str) -> bool {
    matches!(query.get(name), Some("" | "1" | "true" | "yes"))
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the request body is not valid: {e}"))
}

/// 4xx for what the caller or the portal's answer decided, 502/504 for a
/// portal that could not be reached or understood.
fn link_status(e: &LinkError) -> StatusCode {
    match e {
        LinkError::Key(_) => StatusCode::BAD_REQUEST,
        LinkError::License(e) => import_status(e),
        LinkError::NothingToRefresh => StatusCode::CONFLICT,
        LinkError::Revoked(_) => StatusCode::GONE,
        LinkError::Portal(p) => match p {
            PortalError::NotConfigured => StatusCode::CONFLICT,
            PortalError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            PortalError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        },
    }
}

fn import_status(e: &ImportError) -> StatusCode {
    match e {
        ImportError::Invalid(LicenseError::NotALicense)
        | ImportError::Invalid(LicenseError::Damaged(_)) => StatusCode::BAD_REQUEST,
        ImportError::Invalid(_)
        | ImportError::Older { .. }
        | ImportError::WrongNonce
        | ImportError::WrongDevice => StatusCode::UNPROCESSABLE_ENTITY,
        ImportError::OtherSystem { .. } | ImportError::Weaker { .. } => StatusCode::CONFLICT,
        ImportError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(super) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Resp {
    match serde_json::to_vec(body) {
        Ok(bytes) => respond(status, bytes),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

pub(super) fn error(status: StatusCode, message: &str) -> Resp {
    respond_json_error(status, message, Vec::new())
}

pub(super) fn respond_json_error(
    status: StatusCode,
    message: &str,
    rows: Vec<crate::seats::RowError>,
) -> Resp {
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_string(),
        rows,
    })
    .unwrap_or_else(|_| b"{\"error\":\"internal error\"}".to_vec());
    respond(status, body)
}

fn respond(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
