//! The HTTPS server: rustls on a TCP listener, a small hyper service with
//! one handler table, the fault knob applied per connection and per
//! request, and a graceful stop on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use licagent::license::SigningKey;
use licagent::portal::wire::{self, ActivateRequest, TrialRequest, MAX_BODY_BYTES};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::db::{Db, DbError, Fault};
use crate::service::{self, ApiError, Issuer, Mode};

/// Time a client has for the TLS handshake, and for the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send the body once the head arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections may finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot write the address file {path}: {source}")]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// What every request handler shares.
pub struct State {
    pub db: Mutex<Db>,
    pub key: SigningKey,
}

impl State {
    fn fault(&self) -> Fault {
        match self.with_db(|db| db.fault()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot read the fault setting, assuming none: {e}");
                Fault::None
            }
        }
    }

    fn with_db<T>(&self, f: impl FnOnce(&Db) -> Result<T, DbError>) -> Result<T, DbError> {
        // A handler that panicked while holding the lock left no partial
        // write behind (SQLite statements are atomic), so carry on.
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&db)
    }
}

/// Writes `addr` to `path` so that a reader never sees half of it.
fn write_addr_file(path: &PathBuf, addr: &SocketAddr) -> Result<(), ServeError> {
    let tmp = path.with_extension("tmp");
    let err = |source| ServeError::AddrFile {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, addr.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(
    state: Arc<State>,
    tls: Arc<rustls::ServerConfig>,
    listen: &str,
    addr_file: Option<PathBuf>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    if let Some(path) = &addr_file {
        write_addr_file(path, &addr)?;
    }
    println!("listening on https://{addr}");
    tracing::info!(%addr, "listening");

    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: pause, never spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let acceptor = acceptor.clone();
                let stop_rx = stop_rx.clone();
                conns.spawn(connection(state, acceptor, tcp, peer, stop_rx));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    if let Some(path) = &addr_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn connection(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop_rx: watch::Receiver<bool>,
) {
    if state.fault() == Fault::Down {
        // Dropping the stream closes it before any TLS byte is sent.
        tracing::debug!(%peer, "fault down: closing");
        return;
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        _ = stop_rx.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(status: u16, err: &ApiError) -> Response<Full<Bytes>> {
    json_response(status, serde_json::to_vec(&err.body()).unwrap_or_default())
}

fn ok_json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    json_response(200, serde_json::to_vec(v).unwrap_or_default())
}

/// Reads the body under the size cap and the body timeout.
async fn read_body(body: Incoming) -> Result<Bytes, (u16, ApiError)> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            413,
            ApiError::bad_request(format!(
                "the request body is larger than {} KiB",
                MAX_BODY_BYTES / 1024
            )),
        )),
        Ok(Err(e)) => Err((
            400,
            ApiError::bad_request(format!("the request body could not be read: {e}")),
        )),
        Err(_) => Err((
            408,
            ApiError::bad_request("the request body was not sent in time"),
        )),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let fault = state.fault();
    if let Fault::Slow(secs) = fault {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let sig = req
        .headers()
        .get(wire::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Absent: an agent of protocol 1, which gets answers it knows.
    let protocol: u32 = req
        .headers()
        .get(wire::PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1);
    let endpoint = match path.as_str() {
        wire::ACTIVATE_PATH => Endpoint::Activate(Mode::Activate),
        wire::REHOST_PATH => Endpoint::Activate(Mode::Rehost),
        wire::REFRESH_PATH => Endpoint::Refresh,
        wire::DEACTIVATE_PATH => Endpoint::Deactivate,
        wire::TRIAL_PATH => Endpoint::Trial,
        _ => {
            let err = ApiError::bad_request(format!("there is no endpoint {path}"));
            return error_response(404, &err);
        }
    };
    if method != Method::POST {
        let err = ApiError::bad_request(format!("{path} takes POST, not {method}"));
        return error_response(405, &err);
    }
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err((status, err)) => return error_response(status, &err),
    };
    // These two answer before any state changes: the client sees a failure,
    // so the portal must not have acted.
    match fault {
        Fault::Error500 => {
            let err = ApiError {
                code: wire::ErrorCode::Internal,
                message: "the portal failed (injected fault error500)".into(),
                revocation: None,
            };
            return error_response(500, &err);
        }
        Fault::Garbage => {
            let mut resp = Response::new(Full::new(Bytes::from_static(
                b"<html><body>502 Bad Gateway (injected fault garbage)</body></html>",
            )));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/html"),
            );
            return resp;
        }
        _ => {}
    }
    // SQLite and Ed25519 work is blocking; keep it off the reactor.
    // The request's nonce, when it has a valid one: every answer to it
    // carries the portal's signed time (protocol 2).
    let nonce = serde_json::from_slice::<NonceOnly>(&body)
        .ok()
        .and_then(|n| n.nonce)
        .filter(|n| wire::nonce_is_valid(n));
    let now_ms = licagent::time::now_ms();
    let now = now_ms.div_euclid(1000);
    let signer = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        dispatch(
            &state,
            endpoint,
            fault,
            &body,
            sig.as_deref(),
            now,
            protocol,
        )
    })
    .await;
    let stamp = |code: Option<wire::ErrorCode>| {
        nonce.as_ref().map(|n| {
            wire::SignedStamp::sign(
                &wire::Stamp {
                    nonce: n.clone(),
                    now,
                    now_ms: Some(now_ms),
                    code,
                },
                &signer.key,
            )
        })
    };
    match result {
        Ok(Ok(Answer::License(license))) => ok_json(&wire::LicenseResponse {
            license,
            stamp: stamp(None),
        }),
        Ok(Ok(Answer::Deactivated(mut d))) => {
            d.stamp = stamp(None);
            ok_json(&d)
        }
        Ok(Err(err)) => {
            tracing::info!(%path, code = ?err.code, "refused: {}", err.message);
            let mut body = err.body();
            body.stamp = stamp(Some(err.code));
            json_response(err.status(), serde_json::to_vec(&body).unwrap_or_default())
        }
        Err(e) => {
            tracing::error!(%path, "handler failed: {e}");
            let err = ApiError {
                code: wire::ErrorCode::Internal,
                message: "the portal failed to process the request; try again later".into(),
                revocation: None,
            };
            error_response(500, &err)
        }
    }
}

/// Just the nonce of any request body.
#[derive(serde::Deserialize)]
struct NonceOnly {
    #[serde(default)]
    nonce: Option<String>,
}

/// What a handler answers with; the stamp is added on the way out.
enum Answer {
    License(String),
    Deactivated(wire::DeactivateResponse),
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Activate(Mode),
    Refresh,
    Deactivate,
    Trial,
}

/// The handler table.
fn dispatch(
    state: &State,
    endpoint: Endpoint,
    fault: Fault,
    body: &[u8],
    sig: Option<&str>,
    now: i64,
    protocol: u32,
) -> Result<Answer, ApiError> {
    let throwaway;
    let mut issuer = Issuer::new(&state.key);
    issuer.protocol = protocol;
    match fault {
        Fault::UnknownSigner => {
            throwaway = SigningKey::try_generate()
                .map_err(|e| {
                    tracing::error!("{e}");
                    ApiError {
                        code: wire::ErrorCode::Internal,
                        message: "the portal failed to make a key; try again later".into(),
                        revocation: None,
                    }
                })?
                .0;
            issuer.license_key = &throwaway;
        }
        Fault::WrongNonce => issuer.nonce_override = Some(wire::new_nonce()),
        _ => {}
    }
    let db = state.db.lock().unwrap_or_else(|p| p.into_inner());
    let result = match endpoint {
        Endpoint::Activate(mode) => {
            let req: ActivateRequest = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the activation request is not valid: {e}"))
            })?;
            service::activate(&db, &issuer, &req, mode, now).map(Answer::License)
        }
        Endpoint::Refresh => service::refresh(&db, &issuer, body, sig, now).map(Answer::License),
        Endpoint::Deactivate => service::deactivate(&db, body, sig, now).map(Answer::Deactivated),
        Endpoint::Trial => {
            let req: TrialRequest = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the trial request is not valid: {e}"))
            })?;
            service::trial(&db, &issuer, &req, now).map(Answer::License)
        }
    };
    // Agents of protocol 1 do not know `duplicate`; `bound_elsewhere`
    // tells them the same in words they act on (no retry storm, no
    // revocation).
    result.map_err(|mut e| {
        if protocol < 2 && e.code == wire::ErrorCode::Duplicate {
            e.code = wire::ErrorCode::BoundElsewhere;
        }
        e
    })
}
