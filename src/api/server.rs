//! The socket server's handler table: routes each request (accepted, with
//! its caller's credentials and its body read, by `accept.rs`).

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tracing::warn;

use super::auth::{Peer, Policy};
use super::error::{self as errors, ApiError, Code, ErrorBody};
use super::events::{Events, SseBody};
use super::types::{ActivateBody, RequestCodeAnswer, RequestCodeBody, Status, TrialBody};
use crate::config::Config;
use crate::daemon::agent::{Agent, TestModeError};
use crate::daemon::link::Link;

/// The body limits are applied by the connection layer (`accept.rs`)
/// before a request gets here; kept in the handler as a second line.
use super::limits::{MAX_BODY, MAX_BULK_BODY as MAX_IMPORT_BODY};

/// What the handlers share.
pub struct Shared {
    pub agent: Arc<Agent>,
    pub link: Arc<Link>,
    /// Replaced on config reload.
    pub config: RwLock<Config>,
    /// Replaced on config reload.
    pub policy: RwLock<Policy>,
    /// Changes for `GET /v1/events`.
    pub events: Arc<Events>,
}

pub(super) type Resp = Response<BodyKind>;

/// An answer's body: whole (every answer but one), or the event stream.
pub enum BodyKind {
    Whole(Full<Bytes>),
    Stream(SseBody),
}

impl hyper::body::Body for BodyKind {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            BodyKind::Whole(b) => std::pin::Pin::new(b).poll_frame(cx),
            BodyKind::Stream(s) => std::pin::Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BodyKind::Whole(b) => b.is_end_stream(),
            BodyKind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            BodyKind::Whole(b) => b.size_hint(),
            BodyKind::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Routes one request: origin check, authorization, body, handler.
pub(super) async fn handle(req: Request<Full<Bytes>>, peer: Peer, shared: &Shared) -> Resp {
    // The page under /ui/ (src/ui): its files, and its calls through
    // /ui/api/v1/..., which pass the CSRF rules and go on as /v1/... with
    // the caller's own rights.
    let (req, from_page) = match crate::ui::gate(req) {
        crate::ui::Gate::Answer(resp) => return resp.map(BodyKind::Whole),
        crate::ui::Gate::Api(req) => (req, true),
        crate::ui::Gate::NotUi(req) => (req, false),
    };
    // Anything else from a browser page is refused (the socket is local,
    // but a proxy in front of it could forward browser requests).
    if !from_page && (req.headers().contains_key("origin") || req.headers().contains_key("referer"))
    {
        return error(
            StatusCode::FORBIDDEN,
            Code::OriginRefused,
            "requests from web pages are refused",
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = match super::users::Query::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(msg) => return error(StatusCode::BAD_REQUEST, Code::BadRequest, &msg),
    };
    let route = match Route::of(&method, &path) {
        Ok(r) => r,
        Err(status) if status == StatusCode::METHOD_NOT_ALLOWED => {
            return error(
                status,
                Code::MethodNotAllowed,
                &format!("{method} is not allowed on {path}"),
            );
        }
        Err(status) if status == StatusCode::BAD_REQUEST => {
            return error(
                status,
                Code::BadRequest,
                &format!("the path {path} is not UTF-8 once decoded"),
            )
        }
        Err(status) => {
            return error(
                status,
                Code::NotFound,
                &format!("no such API path: {path} (docs/api.md lists the routes)"),
            )
        }
    };
    let access = route.access(&method);
    if access == Access::Change {
        let verdict = shared
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .may_change(&peer);
        if let Err(why) = verdict {
            warn!(
                message_id = crate::daemon::logging::message_id::REFUSED_CALLER,
                uid = peer.uid,
                gid = peer.gid,
                pid = peer.pid.unwrap_or(0),
                %method,
                %path,
                "refused: {why}"
            );
            return error(
                StatusCode::FORBIDDEN,
                Code::AccessDenied,
                &format!("access denied: {why}"),
            );
        }
    }
    if route == Route::Events {
        let headers = req.headers();
        return super::events::stream(&shared.events, headers, query.get("since"), status(shared));
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
                Code::BodyTooLarge,
                &format!("the request body is larger than {limit} bytes"),
            )
        }
    };
    let resp = route_to(route, &method, &query, &body, peer, shared).await;
    if access == Access::Change {
        // Whatever the change did (users licensed, seats, state), the
        // event stream hears it before the caller gets its answer.
        shared.agent.publish_changes(&shared.events);
    }
    resp
}

async fn route_to(
    route: Route,
    method: &Method,
    query: &super::users::Query,
    body: &[u8],
    peer: Peer,
    shared: &Shared,
) -> Resp {
    let agent = &shared.agent;
    let link = &shared.link;
    match route {
        Route::Status => json(StatusCode::OK, &status(shared)),
        Route::Hwid => json(StatusCode::OK, &agent.hardware()),
        Route::Whoami => json(StatusCode::OK, &whoami(shared, &peer)),
        Route::License => {
            let Ok(text) = std::str::from_utf8(body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    Code::NotALicense,
                    "the license file is not UTF-8 text",
                );
            };
            match agent.import(text, query_flag(query, "replace")) {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => {
                    warn!(uid = peer.uid, "license import refused: {e}");
                    fail(errors::import(&e), &e)
                }
            }
        }
        Route::Activate => {
            let req: ActivateBody = match parse(body) {
                Ok(r) => r,
                Err(msg) => return error(StatusCode::BAD_REQUEST, Code::BadRequest, &msg),
            };
            match link.activate(agent, &req.key, req.rehost).await {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => fail(errors::link(&e), &e),
            }
        }
        Route::Refresh => match link.refresh(agent).await {
            Ok(_) => json(StatusCode::OK, &status(shared)),
            Err(e) => fail(errors::link(&e), &e),
        },
        Route::RequestCode => {
            let req: RequestCodeBody = match parse(body) {
                Ok(r) => r,
                Err(msg) => return error(StatusCode::BAD_REQUEST, Code::BadRequest, &msg),
            };
            match link.request_code(agent, &req.key) {
                Ok(code) => json(StatusCode::OK, &RequestCodeAnswer { request_code: code }),
                Err(e) => fail(errors::link(&e), &e),
            }
        }
        Route::Trial => match link
            .trial(agent, parse::<TrialBody>(body).unwrap_or_default().replace)
            .await
        {
            Ok(_) => json(StatusCode::OK, &status(shared)),
            Err(e) => fail(errors::link(&e), &e),
        },
        Route::Deactivate => match link.deactivate(agent).await {
            Ok(()) => match agent.remove_license() {
                Ok(_) => json(StatusCode::OK, &status(shared)),
                Err(e) => fail(errors::store(&e), &e),
            },
            Err(e) => fail(errors::link(&e), &e),
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
        // Answered before the body is read, above.
        Route::Events => error(StatusCode::NOT_FOUND, Code::NotFound, "no such API path"),
        Route::Users
        | Route::User(_)
        | Route::UserProfile(_)
        | Route::UserAddons(_)
        | Route::UserAddon(..)
        | Route::UsersImport
        | Route::Entitlement
        | Route::Entitlements
        | Route::Seats
        | Route::Audit
        | Route::Export
        | Route::Restore => super::users::handle(agent, method, route, query, body, peer),
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can connect to the socket.
    Read,
    /// Root, the daemon's uid, the admin group.
    Change,
}

/// Every path the API knows with its methods: the handler table, as data.
/// The router below matches exactly these (a unit test holds them
/// together), and the OpenAPI test checks that docs/openapi.yaml documents
/// each one. Every GET is a read; so is `POST /v1/entitlements`; every
/// other call changes state.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/status", &["GET"]),
    ("/v1/hwid", &["GET"]),
    // Who the caller is and whether it may change things (the page greys
    // its buttons out for a reader).
    ("/v1/whoami", &["GET"]),
    ("/v1/events", &["GET"]),
    ("/v1/license", &["POST"]),
    ("/v1/activate", &["POST"]),
    ("/v1/refresh", &["POST"]),
    // It carries the PBX key: not for every reader.
    ("/v1/request-code", &["POST"]),
    ("/v1/trial", &["POST"]),
    ("/v1/deactivate", &["POST"]),
    ("/v1/test-mode/start", &["POST"]),
    ("/v1/test-mode/stop", &["POST"]),
    ("/v1/users", &["GET", "POST"]),
    ("/v1/users/import", &["POST"]),
    ("/v1/users/{id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/users/{id}/profile", &["PUT", "DELETE"]),
    ("/v1/users/{id}/addons", &["POST"]),
    ("/v1/users/{id}/addons/{code}", &["DELETE"]),
    ("/v1/entitlement", &["GET"]),
    // A batch of checks: a read, although it has a body.
    ("/v1/entitlements", &["POST"]),
    ("/v1/seats", &["GET"]),
    ("/v1/audit", &["GET"]),
    // A backup of every user: for admins, not for every reader.
    ("/v1/export", &["POST"]),
    ("/v1/restore", &["POST"]),
];

/// Every path the API knows. Parsed once per request from method and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Status,
    Hwid,
    Whoami,
    Events,
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
    Entitlements,
    Seats,
    Audit,
    Export,
    Restore,
}

impl Route {
    /// The handler table: which methods each path takes. `Err` is 404 for
    /// an unknown path, 405 for a known path with another method, 400 for
    /// a path that is not UTF-8 once decoded.
    fn of(method: &Method, path: &str) -> Result<Route, StatusCode> {
        use Method as M;
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(super::users::percent_decode)
            .collect::<Result<_, _>>()
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let (route, allowed): (Route, &[Method]) = match segs.as_slice() {
            ["v1", "status"] => (Route::Status, &[M::GET]),
            ["v1", "hwid"] => (Route::Hwid, &[M::GET]),
            ["v1", "whoami"] => (Route::Whoami, &[M::GET]),
            ["v1", "events"] => (Route::Events, &[M::GET]),
            ["v1", "license"] => (Route::License, &[M::POST]),
            ["v1", "activate"] => (Route::Activate, &[M::POST]),
            ["v1", "refresh"] => (Route::Refresh, &[M::POST]),
            ["v1", "request-code"] => (Route::RequestCode, &[M::POST]),
            ["v1", "trial"] => (Route::Trial, &[M::POST]),
            ["v1", "deactivate"] => (Route::Deactivate, &[M::POST]),
            ["v1", "test-mode", "start"] => (Route::TestModeStart, &[M::POST]),
            ["v1", "test-mode", "stop"] => (Route::TestModeStop, &[M::POST]),
            ["v1", "users"] => (Route::Users, &[M::GET, M::POST]),
            ["v1", "users", "import"] => (Route::UsersImport, &[M::POST]),
            ["v1", "users", id] if !id.is_empty() => {
                (Route::User(id.to_string()), &[M::GET, M::PATCH, M::DELETE])
            }
            ["v1", "users", id, "profile"] if !id.is_empty() => {
                (Route::UserProfile(id.to_string()), &[M::PUT, M::DELETE])
            }
            ["v1", "users", id, "addons"] if !id.is_empty() => {
                (Route::UserAddons(id.to_string()), &[M::POST])
            }
            ["v1", "users", id, "addons", code] if !id.is_empty() && !code.is_empty() => (
                Route::UserAddon(id.to_string(), code.to_string()),
                &[M::DELETE],
            ),
            ["v1", "entitlement"] => (Route::Entitlement, &[M::GET]),
            ["v1", "entitlements"] => (Route::Entitlements, &[M::POST]),
            ["v1", "seats"] => (Route::Seats, &[M::GET]),
            ["v1", "audit"] => (Route::Audit, &[M::GET]),
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

    /// Reads are open to whoever may connect; the rest changes state.
    /// Every GET is a read, and so is a batch of entitlement checks.
    fn access(&self, method: &Method) -> Access {
        if method == Method::GET || *self == Route::Entitlements {
            Access::Read
        } else {
            Access::Change
        }
    }
}

fn test_mode(shared: &Shared, r: Result<Status, TestModeError>) -> Resp {
    match r {
        Ok(_) => json(StatusCode::OK, &status(shared)),
        Err(e) => fail(errors::test_mode(&e), &e),
    }
}

fn whoami(shared: &Shared, peer: &Peer) -> super::types::Whoami {
    let policy = shared.policy.read().unwrap_or_else(|p| p.into_inner());
    super::types::Whoami {
        uid: peer.uid,
        user: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
            .ok()
            .flatten()
            .map(|u| u.name),
        may_change: policy.may_change(peer).is_ok(),
        admin_group: policy.admin_group_name().map(str::to_string),
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

pub(super) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Resp {
    match serde_json::to_vec(body) {
        Ok(bytes) => respond(status, bytes),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
pub(super) fn error(status: StatusCode, code: Code, message: &str) -> Resp {
    respond_error(status, ApiError::new(code, message))
}

/// An error answer from a (status, code) pair and the error's sentence.
pub(super) fn fail(how: (StatusCode, Code), e: &dyn std::fmt::Display) -> Resp {
    error(how.0, how.1, &e.to_string())
}

pub(super) fn respond_error(status: StatusCode, error: ApiError) -> Resp {
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
    });
    respond(status, body)
}

fn respond(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(BodyKind::Whole(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];

    #[test]
    fn the_route_table_and_the_router_agree() {
        for (template, methods) in ROUTES {
            let path = template
                .replace("{id}", "u%2F1")
                .replace("{code}", "mobile");
            for m in METHODS {
                let got = Route::of(&m, &path);
                if methods.contains(&m.as_str()) {
                    assert!(got.is_ok(), "{m} {path}: {got:?}");
                } else {
                    assert_eq!(got, Err(StatusCode::METHOD_NOT_ALLOWED), "{m} {path}");
                }
            }
        }
    }

    #[test]
    fn wrong_paths_are_not_found_whatever_the_method() {
        for path in [
            "/v1/entitlement/",
            "/v1/users//profile",
            "/v2/status",
            "/status",
            "/v1/users/u1/addons/",
        ] {
            for m in METHODS {
                assert_eq!(
                    Route::of(&m, path),
                    Err(StatusCode::NOT_FOUND),
                    "{m} {path}"
                );
            }
        }
    }

    #[test]
    fn path_segments_are_decoded_strictly() {
        assert_eq!(
            Route::of(&Method::GET, "/v1/users/a+b%2Fc"),
            Ok(Route::User("a+b/c".into()))
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/users/%FF"),
            Err(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn reads_and_changes() {
        assert_eq!(Route::Users.access(&Method::GET), Access::Read);
        assert_eq!(Route::Users.access(&Method::POST), Access::Change);
        assert_eq!(Route::Entitlements.access(&Method::POST), Access::Read);
        assert_eq!(Route::Export.access(&Method::POST), Access::Change);
        assert_eq!(
            Route::User("u1".into()).access(&Method::DELETE),
            Access::Change
        );
    }
}
