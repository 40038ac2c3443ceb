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
use super::types::{ActivateBody, RequestCodeAnswer, RequestCodeBody, Status};
use crate::config::Config;
use crate::daemon::agent::{Agent, ImportError, TestModeError};
use crate::daemon::link::{Link, LinkError};
use crate::license::LicenseError;
use crate::portal::PortalError;

/// Largest request body accepted (a license file is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

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

type Resp = Response<Full<Bytes>>;

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

/// Whether a route changes state (and so needs an admin caller).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Change,
}

/// The handler table: method, path, access, handler.
async fn handle(req: Request<Incoming>, peer: Peer, shared: &Shared) -> Resp {
    // A browser page must never drive the agent (the socket is local, but a
    // proxy in front of it could forward browser requests).
    if req.headers().contains_key("origin") || req.headers().contains_key("referer") {
        return error(StatusCode::FORBIDDEN, "requests from web pages are refused");
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let Some(&(_, _, access)) = ROUTES.iter().find(|(m, p, _)| *m == method && *p == path) else {
        return if ROUTES.iter().any(|(_, p, _)| *p == path) {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not allowed on {path}"),
            )
        } else {
            error(StatusCode::NOT_FOUND, &format!("no such API path: {path}"))
        };
    };
    if access == Access::Change {
        let verdict = shared
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .may_change(&peer);
        if let Err(why) = verdict {
            warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, %method, %path, "refused: {why}");
            return error(
                StatusCode::FORBIDDEN,
                "access denied: changing the license needs root or the admin group",
            );
        }
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {MAX_BODY} bytes"),
            )
        }
    };
    let agent = &shared.agent;
    let link = &shared.link;
    match path.as_str() {
        "/v1/status" => json(StatusCode::OK, &status(shared)),
        "/v1/hwid" => json(StatusCode::OK, &agent.hardware()),
        "/v1/license" => {
            let Ok(text) = std::str::from_utf8(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the license file is not UTF-8 text",
                );
            };
            match agent.import(text) {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => {
                    warn!(uid = peer.uid, "license import refused: {e}");
                    error(import_status(&e), &e.to_string())
                }
            }
        }
        "/v1/activate" => {
            let req: ActivateBody = match parse(&body) {
                Ok(r) => r,
                Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
            };
            match link.activate(agent, &req.key, req.rehost).await {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => error(link_status(&e), &e.to_string()),
            }
        }
        "/v1/refresh" => match link.refresh(agent).await {
            Ok(_) => json(StatusCode::OK, &status(shared)),
            Err(e) => error(link_status(&e), &e.to_string()),
        },
        "/v1/request-code" => {
            let req: RequestCodeBody = match parse(&body) {
                Ok(r) => r,
                Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
            };
            match link.request_code(agent, &req.key) {
                Ok(code) => json(StatusCode::OK, &RequestCodeAnswer { request_code: code }),
                Err(e) => error(link_status(&e), &e.to_string()),
            }
        }
        "/v1/trial" => match link.trial(agent).await {
            Ok(_) => json(StatusCode::OK, &status(shared)),
            Err(e) => error(link_status(&e), &e.to_string()),
        },
        "/v1/deactivate" => match link.deactivate(agent).await {
            Ok(()) => match agent.remove_license() {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            Err(e) => error(link_status(&e), &e.to_string()),
        },
        "/v1/test-mode/start" => {
            let secs = shared
                .config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .test_mode
                .duration_secs as i64;
            test_mode(shared, agent.start_test_mode(secs))
        }
        "/v1/test-mode/stop" => test_mode(shared, agent.stop_test_mode()),
        _ => error(StatusCode::NOT_FOUND, &format!("no such API path: {path}")),
    }
}

fn test_mode(shared: &Shared, r: Result<Status, TestModeError>) -> Resp {
    match r {
        Ok(_) => json(StatusCode::OK, &status(shared)),
        Err(TestModeError::Store(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// The handler table's index: method, path, and who may call it.
const ROUTES: &[(Method, &str, Access)] = &[
    (Method::GET, "/v1/status", Access::Read),
    (Method::GET, "/v1/hwid", Access::Read),
    (Method::POST, "/v1/license", Access::Change),
    (Method::POST, "/v1/activate", Access::Change),
    (Method::POST, "/v1/refresh", Access::Change),
    // It carries the PBX key: not for every reader.
    (Method::POST, "/v1/request-code", Access::Change),
    (Method::POST, "/v1/deactivate", Access::Change),
    (Method::POST, "/v1/trial", Access::Change),
    (Method::POST, "/v1/test-mode/start", Access::Change),
    (Method::POST, "/v1/test-mode/stop", Access::Change),
];

fn status(shared: &Shared) -> Status {
    let mut s = shared.agent.status();
    s.refresh = Some(shared.link.info(&shared.agent));
    s
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
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
        ImportError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Resp {
    match serde_json::to_vec(body) {
        Ok(bytes) => respond(status, bytes),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Resp {
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_string(),
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
