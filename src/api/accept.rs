//! The connection layer of the socket server: accepts connections, reads
//! the caller's credentials, applies the connection limits, and reads each
//! request's body (bounded in size, time and memory) before the handler
//! table in `server.rs` sees it.
//!
//! Refusals made here reach the caller: a refused body is read and thrown
//! away (up to [`MAX_DRAIN`]) before the answer, so the caller is not cut
//! off mid-write with a broken pipe; a connection over the limits gets a
//! 503 it can read, then is closed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use super::auth::Peer;
use super::error::Code;
use super::limits::{Gate, BODY_BUDGET, MAX_BODY, MAX_BULK_BODY, MAX_DRAIN};
use super::server::{error, handle, Resp, Shared};

/// Bodies at least this large count as a spike: when the last of them is
/// done, freed heap is returned to the system.
const TRIM_AFTER: usize = 128 * 1024;
/// Unit of the body memory budget.
const BUDGET_UNIT: usize = 16 * 1024;
/// Refused connections that may wait at once for their request head (each
/// holds a descriptor meanwhile; counted in the limits' fixed reserve).
const REFUSING: usize = 16;
/// How long a refused connection's request head is waited for, and its
/// answer given to leave.
const REFUSAL_WAIT: Duration = Duration::from_millis(250);
/// How much of a refused connection's request head is read.
const REFUSAL_READ: usize = 16 * 1024;

/// Serves until `shutdown` turns true. Connections in flight finish on
/// their own; new ones are no longer accepted.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let gate = Gate::new(super::limits::caps_from_rlimit());
    let c = gate.caps();
    info!(
        privileged = c.privileged,
        unprivileged = c.unprivileged,
        per_uid = c.per_uid,
        "API connection limits"
    );
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let bodies = Arc::new(Bodies {
        budget: Semaphore::new(BODY_BUDGET / BUDGET_UNIT),
        large: AtomicUsize::new(0),
    });
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
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot read the caller's credentials, dropping the connection: {e}");
                continue;
            }
        };
        let privileged = shared
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .privileged(&peer);
        let ticket = match gate.admit(peer.uid, privileged) {
            Ok(t) => t,
            Err(why) => {
                debug!("API connection refused: {why}");
                // A few refusals at a time wait briefly for the request so
                // that the caller can read the answer; in a flood the rest
                // are answered and closed at once.
                match refusing.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            refuse_connection(stream, &why).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let _ = stream.try_write(&refusal(&why));
                    }
                }
                continue;
            }
        };
        let (header_timeout, body_timeout) = {
            let c = shared.config.read().unwrap_or_else(|p| p.into_inner());
            (
                Duration::from_secs(c.api.header_timeout_secs),
                Duration::from_secs(c.api.body_timeout_secs),
            )
        };
        let (shared, bodies) = (shared.clone(), bodies.clone());
        tokio::spawn(async move {
            let _ticket = ticket;
            let service = hyper::service::service_fn(move |req| {
                let (shared, bodies, peer) = (shared.clone(), bodies.clone(), peer.clone());
                async move {
                    Ok::<_, Infallible>(request(req, peer, &shared, &bodies, body_timeout).await)
                }
            });
            // header_read_timeout also runs while a kept-alive connection
            // waits for its next request, so an idle one is closed too.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!("API connection ended: {e}");
            }
        });
    }
}

/// A connection over the limits: its request head is read (briefly, so
/// that the caller is not writing into a closed socket), then it gets a
/// 503 saying why, and is closed.
async fn refuse_connection(mut stream: UnixStream, why: &str) {
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        let mut buf = [0u8; 1024];
        while head.len() < REFUSAL_READ && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_WAIT, read_head).await;
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.write_all(&refusal(why))).await;
    let _ = stream.shutdown().await;
}

/// The 503 answer of a refused connection (the API's error shape).
fn refusal(why: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": { "code": Code::Busy, "message": why } }).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body memory budget and the count of large bodies in flight.
struct Bodies {
    budget: Semaphore,
    large: AtomicUsize,
}

/// Marks a large body in flight; the last one out trims the heap.
struct Large<'a>(&'a AtomicUsize);

impl Drop for Large<'_> {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            super::limits::trim_heap();
        }
    }
}

/// One request: its body read (or thrown away) under the limits, then the
/// handler table.
async fn request(
    req: Request<Incoming>,
    peer: Peer,
    shared: &Shared,
    bodies: &Bodies,
    timeout: Duration,
) -> Resp {
    let (parts, body) = req.into_parts();
    // The same limits as the handler's (server.rs).
    // The page's calls come as /ui/api/v1/... (src/ui) and get the same limit.
    let path = parts.uri.path();
    let bulk = path == "/v1/users/import" || path == "/ui/api/v1/users/import";
    let limit = if parts.method == Method::POST && bulk {
        MAX_BULK_BODY
    } else {
        MAX_BODY
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Only callers who may change things get their body kept: reads carry
    // none (but the batch of checks, a read with a body), and anything else
    // from a reader is refused by the handler.
    let batch = parts.method == Method::POST
        && (path == "/v1/entitlements" || path == "/ui/api/v1/entitlements");
    let keep = batch
        || (parts.method != Method::GET
            && shared
                .policy
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .privileged(&peer));
    // The hot path (the PBX's checks, status): a GET without a body goes
    // straight to the handler, no timer, no buffer.
    if !keep && hyper::body::Body::is_end_stream(&body) {
        return handle(
            Request::from_parts(parts, Full::new(Bytes::new())),
            peer,
            shared,
        )
        .await;
    }
    if !keep || declared.is_some_and(|n| n > limit as u64) {
        let drained = drain(body, declared, timeout).await;
        if keep {
            let mut resp = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::BodyTooLarge,
                &format!("the request body is larger than {limit} bytes"),
            );
            close_after(&mut resp);
            return resp;
        }
        let mut resp = handle(
            Request::from_parts(parts, Full::new(Bytes::new())),
            peer,
            shared,
        )
        .await;
        if !drained {
            close_after(&mut resp);
        }
        return resp;
    }
    // Memory for the body, from the shared budget (the declared length, or
    // the limit for a body of unknown length).
    let want = declared.map_or(limit, |n| n as usize).max(1);
    let units = want.div_ceil(BUDGET_UNIT).min(BODY_BUDGET / BUDGET_UNIT) as u32;
    let permit = match tokio::time::timeout(timeout, bodies.budget.acquire_many(units)).await {
        Ok(Ok(p)) => p,
        _ => {
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Busy,
                "the agent is receiving too many large requests at once; retry in a moment",
            );
            close_after(&mut resp);
            return resp;
        }
    };
    let _large = (want >= TRIM_AFTER).then(|| {
        bodies.large.fetch_add(1, Ordering::SeqCst);
        Large(&bodies.large)
    });
    let bytes = match tokio::time::timeout(timeout, collect(body, limit, want)).await {
        Ok(Ok(b)) => b,
        Ok(Err(Collect::TooLarge)) => {
            let mut resp = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::BodyTooLarge,
                &format!("the request body is larger than {limit} bytes"),
            );
            close_after(&mut resp);
            return resp;
        }
        Ok(Err(Collect::Broken(e))) => {
            let mut resp = error(
                StatusCode::BAD_REQUEST,
                Code::BadRequest,
                &format!("the request body could not be read: {e}"),
            );
            close_after(&mut resp);
            return resp;
        }
        Err(_) => {
            let mut resp = error(
                StatusCode::REQUEST_TIMEOUT,
                Code::BodyTimeout,
                &format!(
                    "the request body did not arrive within {} seconds",
                    timeout.as_secs()
                ),
            );
            close_after(&mut resp);
            return resp;
        }
    };
    let resp = handle(
        Request::from_parts(parts, Full::new(Bytes::from(bytes))),
        peer,
        shared,
    )
    .await;
    drop(permit);
    resp
}

enum Collect {
    TooLarge,
    Broken(hyper::Error),
}

/// Reads the whole body into one buffer of `want` bytes (no copy after).
async fn collect(mut body: Incoming, limit: usize, want: usize) -> Result<Vec<u8>, Collect> {
    let mut out = Vec::with_capacity(want.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Collect::Broken)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(Collect::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Reads and throws away a body the agent will not use, up to
/// [`MAX_DRAIN`] bytes and `timeout`. True if it was read to its end (the
/// connection can carry another request).
async fn drain(mut body: Incoming, declared: Option<u64>, timeout: Duration) -> bool {
    if declared.is_some_and(|n| n > MAX_DRAIN) {
        return false;
    }
    let read = async {
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Ok(data) = frame.into_data() {
                total = total.saturating_add(data.len() as u64);
                if total > MAX_DRAIN {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(false)
}

/// The connection closes after this answer (its body was not read whole).
fn close_after(resp: &mut Resp) {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}
