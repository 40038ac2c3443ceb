//! `GET /v1/events`: changes pushed to the PBX as Server-Sent Events, so
//! that nobody polls `/v1/status`.
//!
//! The daemon publishes what changed after every change it made (an API
//! call, a refresh, a timer) by comparing a small digest of its state with
//! the last one: license state, the license itself, seats per code,
//! over-use, test mode, and which users are licensed. Each event gets the
//! next sequence number; the last [`KEPT`] stay in memory so that a client
//! that reconnects with `Last-Event-ID` (or `?since=N`) gets what it
//! missed. A client that missed more than that gets a `snapshot` with
//! `"missed": true` and must re-read what it needs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame};
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::server::{error, BodyKind, Resp};
use super::types::Status;
use super::Code;
use crate::license::LicenseState;
use crate::seats::UserReason;

/// Events kept for clients that reconnect.
pub const KEPT: usize = 4096;

/// A comment line this often keeps idle streams (and proxies) alive and
/// finds clients that went away.
const PING: Duration = Duration::from_secs(15);

/// Streams open at once; more are answered 503 `busy`.
const MAX_STREAMS: usize = 64;

/// What a client is told, one per change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The license state moved (active → grace, → expired, → revoked ...).
    State {
        from: LicenseState,
        to: LicenseState,
        licensed: bool,
        reason: Option<String>,
    },
    /// Another license is in force (a refresh with a new term or seats, an
    /// import, an activation), or none.
    License {
        license_id: Option<String>,
        license_kind: Option<crate::license::LicenseKind>,
    },
    /// Seats of one profile or add-on changed.
    Seats {
        code: String,
        purchased: Option<u32>,
        used: u32,
        available: Option<u32>,
        over: u32,
    },
    /// A user gained or lost its license, or the reason changed.
    User {
        id: String,
        extension: String,
        licensed: bool,
        reason: Option<UserReason>,
        missing: Vec<String>,
    },
    /// A user was removed.
    UserRemoved { id: String },
    /// The codes used beyond their seats (soft enforcement, a shrunk order).
    OverUse { codes: Vec<String> },
    /// Test mode went on or off.
    TestMode { on: bool, ends_at: Option<String> },
    /// A clock warning appeared or went away.
    Clock { warning: Option<String> },
}

#[derive(Clone, Debug, Serialize)]
struct Event {
    seq: u64,
    at: String,
    #[serde(flatten)]
    change: Change,
}

/// What the daemon looks like to the events: compared with the last one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Digest {
    pub state: Option<LicenseState>,
    pub licensed: bool,
    pub reason: Option<String>,
    pub license_id: Option<String>,
    pub license_kind: Option<crate::license::LicenseKind>,
    /// code → (purchased, used, available, over)
    pub seats: BTreeMap<String, (Option<u32>, u32, Option<u32>, u32)>,
    pub over_use: Vec<String>,
    pub test_until: Option<i64>,
    pub clock_warning: Option<String>,
    /// user id → (extension, licensed, reason, missing)
    pub users: HashMap<String, UserDigest>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UserDigest {
    pub extension: String,
    pub licensed: bool,
    pub reason: Option<UserReason>,
    pub missing: Vec<String>,
}

/// The event bus: the digest last published, the events kept, and a
/// signal that wakes every open stream.
pub struct Events {
    inner: Mutex<Ring>,
    latest: watch::Sender<u64>,
    streams: Arc<()>,
}

struct Ring {
    last: Option<Digest>,
    next_seq: u64,
    kept: VecDeque<Arc<str>>,
    /// Sequence number of `kept[0]`.
    first_seq: u64,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            inner: Mutex::new(Ring {
                last: None,
                next_seq: 1,
                kept: VecDeque::new(),
                first_seq: 1,
            }),
            latest: watch::channel(0).0,
            streams: Arc::new(()),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sequence number of the newest event (0: none yet).
    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Compares `now` with the last digest and publishes what changed. The
    /// first digest is the baseline and publishes nothing.
    pub fn observe(&self, now: Digest, at: i64) {
        let mut ring = self.ring();
        let changes = match &ring.last {
            Some(before) => diff(before, &now),
            None => Vec::new(),
        };
        ring.last = Some(now);
        if changes.is_empty() {
            return;
        }
        let at = crate::time::rfc3339(at);
        for change in changes {
            let seq = ring.next_seq;
            ring.next_seq += 1;
            let event = Event {
                seq,
                at: at.clone(),
                change,
            };
            let Ok(json) = serde_json::to_string(&event) else {
                continue;
            };
            let kind = kind_of(&event.change);
            ring.kept
                .push_back(format!("id: {seq}\nevent: {kind}\ndata: {json}\n\n").into());
            if ring.kept.len() > KEPT {
                ring.kept.pop_front();
                ring.first_seq += 1;
            }
        }
        let newest = ring.next_seq - 1;
        drop(ring);
        self.latest.send_replace(newest);
    }

    /// Frames after `since`; `None` when some of them are no longer kept.
    fn after(&self, since: u64) -> Option<Vec<Arc<str>>> {
        let ring = self.ring();
        if since + 1 < ring.first_seq {
            return None;
        }
        let skip = (since + 1 - ring.first_seq) as usize;
        Some(ring.kept.iter().skip(skip).cloned().collect())
    }
}

fn kind_of(c: &Change) -> &'static str {
    match c {
        Change::State { .. } => "state",
        Change::License { .. } => "license",
        Change::Seats { .. } => "seats",
        Change::User { .. } => "user",
        Change::UserRemoved { .. } => "user_removed",
        Change::OverUse { .. } => "over_use",
        Change::TestMode { .. } => "test_mode",
        Change::Clock { .. } => "clock",
    }
}

/// What changed from `a` to `b`, in a stable order: state first, then the
/// license, seats, over-use, test mode, clock, users (sorted by id).
pub fn diff(a: &Digest, b: &Digest) -> Vec<Change> {
    let mut out = Vec::new();
    if a.state != b.state {
        if let (Some(from), Some(to)) = (a.state, b.state) {
            out.push(Change::State {
                from,
                to,
                licensed: b.licensed,
                reason: b.reason.clone(),
            });
        }
    }
    if a.license_id != b.license_id || a.license_kind != b.license_kind {
        out.push(Change::License {
            license_id: b.license_id.clone(),
            license_kind: b.license_kind,
        });
    }
    let codes: std::collections::BTreeSet<&String> = a.seats.keys().chain(b.seats.keys()).collect();
    for code in codes {
        let (before, after) = (a.seats.get(code), b.seats.get(code));
        if before != after {
            let (purchased, used, available, over) =
                after.cloned().unwrap_or((Some(0), 0, Some(0), 0));
            out.push(Change::Seats {
                code: code.clone(),
                purchased,
                used,
                available,
                over,
            });
        }
    }
    if a.over_use != b.over_use {
        out.push(Change::OverUse {
            codes: b.over_use.clone(),
        });
    }
    if a.test_until != b.test_until {
        out.push(Change::TestMode {
            on: b.test_until.is_some(),
            ends_at: b.test_until.map(crate::time::rfc3339),
        });
    }
    if a.clock_warning != b.clock_warning {
        out.push(Change::Clock {
            warning: b.clock_warning.clone(),
        });
    }
    let mut users: Vec<Change> = Vec::new();
    for (id, u) in &b.users {
        if a.users.get(id) != Some(u) {
            users.push(Change::User {
                id: id.clone(),
                extension: u.extension.clone(),
                licensed: u.licensed,
                reason: u.reason,
                missing: u.missing.clone(),
            });
        }
    }
    for id in a.users.keys() {
        if !b.users.contains_key(id) {
            users.push(Change::UserRemoved { id: id.clone() });
        }
    }
    users.sort_by(|x, y| user_id(x).cmp(user_id(y)));
    out.extend(users);
    out
}

fn user_id(c: &Change) -> &str {
    match c {
        Change::User { id, .. } | Change::UserRemoved { id } => id,
        _ => "",
    }
}

/// Where a client resumes: `Last-Event-ID` (what browsers send on
/// reconnect), else `?since=N`, else only new events.
fn resume_point(headers: &HeaderMap, since: Option<&str>) -> Result<Option<u64>, String> {
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    match header.or(since) {
        None | Some("") => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("the resume point {v:?} is not a sequence number")),
    }
}

/// Answers `GET /v1/events`: a snapshot first (the current status and the
/// newest sequence number), then the missed events after the resume point,
/// then every new event as it happens.
pub fn stream(
    events: &Arc<Events>,
    headers: &HeaderMap,
    since: Option<&str>,
    snapshot: Status,
) -> Resp {
    let resume = match resume_point(headers, since) {
        Ok(r) => r,
        Err(msg) => return error(StatusCode::BAD_REQUEST, Code::BadRequest, &msg),
    };
    if Arc::strong_count(&events.streams) > MAX_STREAMS {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Busy,
            &format!("{MAX_STREAMS} event streams are open already; try again later"),
        );
    }
    let mut latest = events.latest.subscribe();
    let mut seen = *latest.borrow_and_update();
    let mut first: Vec<Arc<str>> = Vec::new();
    let missed = match resume {
        Some(since) if since <= seen => match events.after(since) {
            Some(frames) => {
                first.extend(frames);
                false
            }
            None => true,
        },
        // A resume point from the future (a restarted daemon counts anew).
        Some(_) => true,
        None => false,
    };
    let snap = serde_json::json!({ "seq": seen, "missed": missed, "status": snapshot });
    let head: Arc<str> = format!("event: snapshot\ndata: {snap}\n\n").into();
    first.insert(0, head);

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let events = events.clone();
    let guard = events.streams.clone();
    tokio::spawn(async move {
        let _guard = guard;
        for frame in first {
            if tx.send(Bytes::from(frame.to_string())).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                changed = latest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let newest = *latest.borrow_and_update();
                    let frames = match events.after(seen) {
                        Some(f) => f,
                        // Too slow a reader: say so and go on from now.
                        None => vec![Arc::from(format!(
                            "event: snapshot\ndata: {}\n\n",
                            serde_json::json!({ "seq": newest, "missed": true })
                        ))],
                    };
                    seen = newest;
                    for frame in frames {
                        if tx.send(Bytes::from(frame.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep(PING) => {
                    if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let mut resp = Response::new(BodyKind::Stream(SseBody { rx }));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The body of an event stream: frames as the stream task sends them; ends
/// when the task does.
pub struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(licensed: bool) -> UserDigest {
        UserDigest {
            extension: "201".into(),
            licensed,
            reason: if licensed {
                None
            } else {
                Some(UserReason::NoSeat)
            },
            missing: if licensed {
                vec![]
            } else {
                vec!["premium".into()]
            },
        }
    }

    #[test]
    fn the_first_digest_is_a_baseline_and_changes_are_numbered() {
        let ev = Events::new();
        let mut d = Digest {
            state: Some(LicenseState::Active),
            licensed: true,
            ..Digest::default()
        };
        d.users.insert("u1".into(), user(true));
        ev.observe(d.clone(), 0);
        assert_eq!(ev.latest(), 0);
        d.state = Some(LicenseState::Grace);
        d.users.insert("u1".into(), user(false));
        ev.observe(d.clone(), 0);
        assert_eq!(ev.latest(), 2);
        let frames = ev.after(0).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(
            frames[0].starts_with("id: 1\nevent: state\n"),
            "{}",
            frames[0]
        );
        assert!(frames[0].contains(r#""from":"active","to":"grace""#));
        assert!(frames[1].starts_with("id: 2\nevent: user\n"));
        assert!(frames[1].contains(r#""reason":"no_seat""#));
        // The same digest again publishes nothing.
        ev.observe(d, 0);
        assert_eq!(ev.latest(), 2);
        assert_eq!(ev.after(2).unwrap().len(), 0);
    }

    #[test]
    fn old_events_are_dropped_and_a_late_resume_is_told() {
        let ev = Events::new();
        let mut d = Digest::default();
        ev.observe(d.clone(), 0);
        for i in 0..(KEPT as i64 + 10) {
            d.test_until = Some(i);
            ev.observe(d.clone(), 0);
        }
        assert_eq!(ev.latest(), KEPT as u64 + 10);
        assert!(ev.after(0).is_none());
        assert_eq!(ev.after(10).unwrap().len(), KEPT);
    }

    #[test]
    fn removed_users_and_seats_are_reported() {
        let mut a = Digest::default();
        a.users.insert("u1".into(), user(true));
        a.seats.insert("premium".into(), (Some(5), 1, Some(4), 0));
        let mut b = a.clone();
        b.users.clear();
        b.seats.insert("premium".into(), (Some(5), 0, Some(5), 0));
        let d = diff(&a, &b);
        assert_eq!(
            d,
            vec![
                Change::Seats {
                    code: "premium".into(),
                    purchased: Some(5),
                    used: 0,
                    available: Some(5),
                    over: 0
                },
                Change::UserRemoved { id: "u1".into() }
            ]
        );
    }
}
