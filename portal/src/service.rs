//! The protocol's decisions, independent of HTTP: who may activate, rehost
//! (and how often), refresh, deactivate or try, and what license they get.
//! The HTTPS server and the offline CLI both call these, so an offline
//! activation binds and issues exactly like `/v1/activate`.

use licagent::hwid;
use licagent::license::{
    self, Enforcement, LicenseKind, LicensePayload, PortalKey, PublicKey, SigningKey, Term,
    TermKind,
};
use licagent::portal::wire::{
    self, ActivateRequest, DeactivateRequest, DeactivateResponse, ErrorBody, ErrorCode,
    RefreshRequest, Revocation, SignedRevocation, TrialRequest, MAX_CLOCK_SKEW_SECS,
};

use crate::clones::{self, Duplicate};
use crate::db::{Binding, Db, DbError, Pbx, Settings, TrialDownload, REASON_REHOSTED};
use crate::order;

/// A refusal, as the wire carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub revocation: Option<SignedRevocation>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            revocation: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            revocation: self.revocation.clone(),
            ..ErrorBody::new(self.code, self.message.clone())
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        // The detail goes to the portal's log, not to the device.
        tracing::error!("{e}");
        ApiError::new(
            ErrorCode::Internal,
            "the portal failed to process the request; try again later",
        )
    }
}

impl From<order::OrderError> for ApiError {
    fn from(e: order::OrderError) -> ApiError {
        tracing::error!("{e}");
        ApiError::new(
            ErrorCode::Internal,
            "the portal failed to process the request; try again later",
        )
    }
}

/// How the licenses of one request are made: normally with the portal's key
/// and the request's nonce; the fault knob changes either.
pub struct Issuer<'a> {
    /// Signs licenses.
    pub license_key: &'a SigningKey,
    /// Signs revocations: always the portal's real key.
    pub portal_key: &'a SigningKey,
    /// Put this nonce into licenses instead of the request's.
    pub nonce_override: Option<String>,
    /// The protocol version of the requesting agent: fields that agents
    /// of version 1 would refuse (the test mode policy) go only to newer ones.
    pub protocol: u32,
}

impl<'a> Issuer<'a> {
    pub fn new(key: &'a SigningKey) -> Issuer<'a> {
        Issuer {
            license_key: key,
            portal_key: key,
            nonce_override: None,
            protocol: wire::PROTOCOL_VERSION,
        }
    }
}

/// Whether a request may move a PBX that is bound to other hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Activate,
    Rehost,
}

fn revoked_error(
    issuer: &Issuer<'_>,
    revocation: Revocation,
    message: impl Into<String>,
) -> ApiError {
    ApiError {
        code: ErrorCode::Revoked,
        message: message.into(),
        revocation: Some(SignedRevocation::sign(&revocation, issuer.portal_key)),
    }
}

fn check_hardware(hardware_id: &str, components: &[hwid::Component]) -> Result<(), ApiError> {
    if components.is_empty() {
        return Err(ApiError::bad_request(
            "the request lists no hardware components",
        ));
    }
    if hwid::hardware_id(components) != hardware_id {
        return Err(ApiError::bad_request(
            "the hardware ID does not match the components sent with it",
        ));
    }
    Ok(())
}

fn check_nonce(nonce: &str) -> Result<(), ApiError> {
    if !wire::nonce_is_valid(nonce) {
        return Err(ApiError::bad_request(
            "the nonce must be base64 of 16 random bytes",
        ));
    }
    Ok(())
}

/// Builds and signs a license for the PBX as it is ordered now.
fn issue(
    db: &Db,
    issuer: &Issuer<'_>,
    pbx: &Pbx,
    binding: &Binding,
    nonce: &str,
    now: i64,
) -> Result<String, ApiError> {
    let settings = db.settings()?;
    let license_id = order::new_license_id()?;
    let test_mode = if issuer.protocol >= 2 {
        db.test_policy(&pbx.serial)?
    } else {
        None
    };
    let payload = LicensePayload {
        format: license::payload::PAYLOAD_FORMAT,
        license_id: license_id.clone(),
        system_id: pbx.serial.clone(),
        pbx_name: pbx.name.clone(),
        hardware_id: binding.hardware_id.clone(),
        hardware: binding.components.clone(),
        kind: LicenseKind::Full,
        issued_at: now,
        term: pbx.term,
        refresh_due: Some(now.saturating_add(settings.refresh_secs)),
        grace_secs: settings.grace_secs,
        enforcement: pbx.enforcement,
        seats: pbx.seats.clone(),
        addons: pbx.addons.clone(),
        catalog: order::catalog(),
        device_public_key: Some(binding.device_public_key.clone()),
        nonce: Some(
            issuer
                .nonce_override
                .clone()
                .unwrap_or_else(|| nonce.to_string()),
        ),
        test_mode,
    };
    let armored = license::sign(&payload, issuer.license_key);
    db.record_license(&license_id, &pbx.serial, &binding.hardware_id, now)?;
    tracing::info!(
        serial = %pbx.serial, license_id = %license_id, hardware_id = %binding.hardware_id,
        "issued license"
    );
    Ok(armored)
}

/// How much of the rehost limit a PBX has used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RehostUsage {
    /// Rehosts within the period (since the last reset).
    pub count: u32,
    pub limit: u32,
    pub period_days: i64,
    /// When the limit is reached: the time from which a rehost is possible
    /// again, as the oldest counted rehosts leave the period.
    pub next_at: Option<i64>,
}

/// Counts the rehosts of a PBX in the period ending `now`.
pub fn rehost_usage(
    db: &Db,
    serial: &str,
    settings: &Settings,
    now: i64,
) -> Result<RehostUsage, DbError> {
    let period = settings.rehost_period_secs();
    let times = db.rehost_times(serial, now.saturating_sub(period))?;
    let count = u32::try_from(times.len()).unwrap_or(u32::MAX);
    let limit = settings.rehost_limit;
    // With `count` at or over the limit, a rehost is possible once
    // count - limit + 1 of them left the period: the one at index
    // count - limit (oldest first) is the last that has to go.
    let next_at = (count >= limit)
        .then(|| times.get((count - limit) as usize))
        .flatten()
        .map(|t| t.saturating_add(period));
    Ok(RehostUsage {
        count,
        limit,
        period_days: settings.rehost_period_days,
        next_at,
    })
}

fn rehost_limit_error(serial: &str, usage: &RehostUsage, next_at: i64) -> ApiError {
    let times = |n: u32| {
        if n == 1 {
            "once".to_string()
        } else {
            format!("{n} times")
        }
    };
    ApiError::new(
        ErrorCode::RehostLimit,
        format!(
            "the PBX {serial} was rehosted {} in the last {} days and the limit is {} per {} days; the next rehost is possible from {}, or the vendor can reset the count with `licportal pbx reset-rehosts {serial}`",
            times(usage.count),
            usage.period_days,
            usage.limit,
            usage.period_days,
            order::when(next_at)
        ),
    )
}

/// `/v1/activate` and `/v1/rehost`: binds the PBX of `req.key` to the
/// requesting machine and issues its license.
pub fn activate(
    db: &Db,
    issuer: &Issuer<'_>,
    req: &ActivateRequest,
    mode: Mode,
    now: i64,
) -> Result<String, ApiError> {
    check_nonce(&req.nonce)?;
    check_hardware(&req.hardware_id, &req.components)?;
    PublicKey::from_base64(&req.device_public_key)
        .map_err(|_| ApiError::bad_request("the device public key must be base64 of 32 bytes"))?;
    let key = PortalKey::parse(&req.key).map_err(|e| {
        ApiError::new(
            ErrorCode::UnknownKey,
            format!("the PBX key is not valid ({e}); check it in the portal"),
        )
    })?;
    let pbx = db.pbx_by_key(key.as_str())?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownKey,
            format!(
                "no PBX has the key ending in {}; check it in the portal",
                key.redacted()
            ),
        )
    })?;
    if let Some(r) = &pbx.revoked {
        return Err(revoked_error(
            issuer,
            Revocation {
                system_id: pbx.serial.clone(),
                nonce: req.nonce.clone(),
                revoked_at: r.at,
                reason: r.reason.clone(),
                moved_to: None,
            },
            format!("the PBX {} was revoked: {}", pbx.serial, r.reason),
        ));
    }
    if let Some(bound) = &pbx.binding {
        if bound.hardware_id != req.hardware_id {
            match mode {
                Mode::Activate => {
                    return Err(ApiError::new(
                        ErrorCode::BoundElsewhere,
                        format!(
                            "the PBX {} is activated on another machine; to move it here, run `licagent activate KEY --rehost`",
                            pbx.serial
                        ),
                    ))
                }
                Mode::Rehost => {
                    let usage = rehost_usage(db, &pbx.serial, &db.settings()?, now)?;
                    if let Some(next) = usage.next_at {
                        return Err(rehost_limit_error(&pbx.serial, &usage, next));
                    }
                    db.release(&pbx.serial, now, REASON_REHOSTED, Some(&req.hardware_id))?;
                    tracing::info!(
                        serial = %pbx.serial, from = %bound.hardware_id, to = %req.hardware_id,
                        "rehosted"
                    );
                }
            }
        }
    }
    // Same machine again keeps its first binding time.
    let bound_at = match &pbx.binding {
        Some(b) if b.hardware_id == req.hardware_id => b.bound_at,
        _ => now,
    };
    let binding = Binding {
        hardware_id: req.hardware_id.clone(),
        components: req.components.clone(),
        device_public_key: req.device_public_key.clone(),
        bound_at,
    };
    db.bind(&pbx.serial, &binding)?;
    // A rehost settles which box holds the license; so does activating
    // the box that was kept.
    let moved = pbx
        .binding
        .as_ref()
        .is_some_and(|b| b.hardware_id != req.hardware_id);
    if moved
        || db
            .duplicate(&pbx.serial)?
            .is_some_and(|d| d.kept_hardware_id == req.hardware_id)
    {
        db.clear_duplicate(&pbx.serial)?;
    }
    db.sight(&pbx.serial, &req.hardware_id, &req.device_public_key, now)?;
    issue(db, issuer, &pbx, &binding, &req.nonce, now)
}

/// Prefix of the hash that names a trial system, so that the name says
/// nothing a plain hash of the hardware ID would.
const TRIAL_ID_CONTEXT: &[u8] = b"licportal-trial-system-id\0";

/// The system id of a machine's trial, `TRIAL-XXXX-XXXX`: derived from its
/// hardware ID, so that every download names the same system.
pub fn trial_system_id(hardware_id: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(TRIAL_ID_CONTEXT);
    ctx.update(hardware_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&ctx.finish().as_ref()[..8]);
    // 40 bits: collisions need about a million trials, and would only
    // share a name, not a trial (trials are kept per hardware ID).
    order::system_id("TRIAL", &bytes)
}

/// When a trial that started at `first_at` ends. From the current setting,
/// so that the vendor can lengthen or shorten running trials.
pub fn trial_ends_at(settings: &Settings, first_at: i64) -> i64 {
    first_at.saturating_add(settings.trial_secs)
}

/// `/v1/trial`: a trial license for the requesting machine. The first
/// download starts the trial; later ones get the same end, until it is
/// reached.
pub fn trial(
    db: &Db,
    issuer: &Issuer<'_>,
    req: &TrialRequest,
    now: i64,
) -> Result<String, ApiError> {
    check_nonce(&req.nonce)?;
    check_hardware(&req.hardware_id, &req.components)?;
    PublicKey::from_base64(&req.device_public_key)
        .map_err(|_| ApiError::bad_request("the device public key must be base64 of 32 bytes"))?;
    let settings = db.settings()?;
    let past = db.trial(&req.hardware_id)?;
    let first_at = past.as_ref().map_or(now, |t| t.first_at);
    let ends_at = trial_ends_at(&settings, first_at);
    if now >= ends_at {
        return Err(ApiError::new(
            ErrorCode::TrialUsed,
            format!(
                "the trial of this machine ended at {}; a PBX key from the vendor is needed to license it",
                order::when(ends_at)
            ),
        ));
    }
    let system_id = past
        .map(|t| t.system_id)
        .unwrap_or_else(|| trial_system_id(&req.hardware_id));
    let license_id = order::new_license_id()?;
    let payload = LicensePayload {
        format: license::payload::PAYLOAD_FORMAT,
        license_id: license_id.clone(),
        system_id: system_id.clone(),
        pbx_name: "Trial".into(),
        hardware_id: req.hardware_id.clone(),
        hardware: req.components.clone(),
        kind: LicenseKind::Trial,
        issued_at: now,
        term: Term {
            kind: TermKind::Monthly,
            ends_at: Some(ends_at),
        },
        // A trial never asks the portal again: it runs to its end.
        refresh_due: None,
        grace_secs: 0,
        enforcement: Enforcement::Hard,
        seats: settings.trial_seats.clone(),
        addons: Default::default(),
        catalog: order::catalog(),
        device_public_key: Some(req.device_public_key.clone()),
        nonce: Some(
            issuer
                .nonce_override
                .clone()
                .unwrap_or_else(|| req.nonce.clone()),
        ),
        test_mode: None,
    };
    // Recorded before it is handed out: a download the portal forgot would
    // let the machine start its trial again.
    db.record_trial_download(&TrialDownload {
        hardware_id: &req.hardware_id,
        system_id: &system_id,
        components: &req.components,
        device_public_key: &req.device_public_key,
        license_id: &license_id,
        at: now,
    })?;
    tracing::info!(
        system_id = %system_id, license_id = %license_id, hardware_id = %req.hardware_id,
        ends_at, "issued trial license"
    );
    Ok(license::sign(&payload, issuer.license_key))
}

/// How a signed request's device was recognised.
enum Signer {
    /// The device of the current binding.
    Current(Binding),
    /// A device whose binding was released; it learns it is revoked.
    Past(crate::db::PastBinding),
    /// A device key this system was seen with that a re-activation on the
    /// same hardware replaced: another box, if it is still in use.
    Replaced(crate::clones::Sighting),
}

fn authenticate(db: &Db, pbx: &Pbx, body: &[u8], sig: Option<&str>) -> Result<Signer, ApiError> {
    let sig = sig.ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadSignature,
            format!("the request carries no {} header", wire::SIGNATURE_HEADER),
        )
    })?;
    let verifies = |key_b64: &str| {
        PublicKey::from_base64(key_b64)
            .map(|k| wire::verify_request(body, sig, &k))
            .unwrap_or(false)
    };
    if let Some(b) = &pbx.binding {
        if verifies(&b.device_public_key) {
            return Ok(Signer::Current(b.clone()));
        }
    }
    for past in db.history(&pbx.serial)? {
        if verifies(&past.device_public_key) {
            return Ok(Signer::Past(past));
        }
    }
    let current = pbx.binding.as_ref().map(|b| b.device_public_key.as_str());
    for seen in db.sightings(&pbx.serial)? {
        if Some(seen.device_public_key.as_str()) != current && verifies(&seen.device_public_key) {
            return Ok(Signer::Replaced(seen));
        }
    }
    Err(ApiError::new(
        ErrorCode::BadSignature,
        format!(
            "the request is not signed by the device registered for {}",
            pbx.serial
        ),
    ))
}

/// Clock and replay rules of signed requests.
fn check_fresh(db: &Db, serial: &str, nonce: &str, sent_at: i64, now: i64) -> Result<(), ApiError> {
    check_nonce(nonce)?;
    // abs_diff: `sent_at` comes from outside and may be any i64.
    if sent_at.abs_diff(now) > MAX_CLOCK_SKEW_SECS as u64 {
        return Err(ApiError::new(
            ErrorCode::StaleRequest,
            format!(
                "the request was sent at {} but the portal's time is {}; check the PBX clock",
                order::when(sent_at),
                order::when(now)
            ),
        ));
    }
    if !db.use_nonce(serial, nonce, now)? {
        return Err(ApiError::new(
            ErrorCode::Replayed,
            "this request was received before (its nonce is not new)",
        ));
    }
    Ok(())
}

fn unknown_system(serial: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownSystem,
        format!("the portal knows no system {serial}"),
    )
}

/// The revocation a released device gets.
fn past_revocation(
    issuer: &Issuer<'_>,
    serial: &str,
    past: &crate::db::PastBinding,
    nonce: &str,
) -> ApiError {
    let message = match &past.moved_to {
        Some(hw) => format!("the PBX {serial} was moved to another machine ({hw})"),
        None => format!("the PBX {serial} was {} on this machine", past.reason),
    };
    revoked_error(
        issuer,
        Revocation {
            system_id: serial.to_string(),
            nonce: nonce.to_string(),
            revoked_at: past.released_at,
            reason: past.reason.clone(),
            moved_to: past.moved_to.clone(),
        },
        message,
    )
}

fn not_registered(serial: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BadSignature,
        format!("the request is not signed by the device registered for {serial}"),
    )
}

/// `/v1/refresh`: `body` is the exact bytes that were signed.
pub fn refresh(
    db: &Db,
    issuer: &Issuer<'_>,
    body: &[u8],
    sig: Option<&str>,
    now: i64,
) -> Result<String, ApiError> {
    let req: RefreshRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the refresh request is not valid: {e}")))?;
    let pbx = db
        .pbx_by_serial(&req.system_id)?
        .ok_or_else(|| unknown_system(&req.system_id))?;
    let signer = authenticate(db, &pbx, body, sig)?;
    check_fresh(db, &pbx.serial, &req.nonce, req.sent_at, now)?;
    let window = db.settings()?.duplicate_window_secs;
    let binding = match signer {
        Signer::Past(past) => return Err(past_revocation(issuer, &pbx.serial, &past, &req.nonce)),
        Signer::Current(b) => b,
        Signer::Replaced(seen) => {
            let Some(bound) = pbx.binding.as_ref() else {
                return Err(not_registered(&pbx.serial));
            };
            // An old key from long ago is just not registered any more.
            if now.saturating_sub(seen.last_at) > window {
                return Err(not_registered(&pbx.serial));
            }
            db.mark_duplicate(
                &pbx.serial,
                &Duplicate {
                    hardware_id: req.hardware_id.clone(),
                    device_public_key: seen.device_public_key.clone(),
                    kept_hardware_id: bound.hardware_id.clone(),
                    detected_at: now,
                    last_at: now,
                    attempts: 1,
                },
            )?;
            db.sight(&pbx.serial, &req.hardware_id, &seen.device_public_key, now)?;
            return Err(clones::refusal(&pbx.serial, &bound.hardware_id));
        }
    };
    if let Some(r) = &pbx.revoked {
        return Err(revoked_error(
            issuer,
            Revocation {
                system_id: pbx.serial.clone(),
                nonce: req.nonce.clone(),
                revoked_at: r.at,
                reason: r.reason.clone(),
                moved_to: None,
            },
            format!("the PBX {} was revoked: {}", pbx.serial, r.reason),
        ));
    }
    check_hardware(&req.hardware_id, &req.components)?;
    clones::check(db, &pbx.serial, &binding, &req.hardware_id, now, window)?;
    db.sight(
        &pbx.serial,
        &req.hardware_id,
        &binding.device_public_key,
        now,
    )?;
    db.record_test_sessions(&pbx.serial, &req.test_sessions, now)?;
    // The device key proves the machine; its hardware may have drifted
    // (a NIC swapped), and the new license describes it as it is now.
    db.record_refresh(
        &pbx.serial,
        now,
        &req.seats_in_use,
        &req.license_id,
        &req.hardware_id,
        &req.components,
    )?;
    let binding = Binding {
        hardware_id: req.hardware_id.clone(),
        components: req.components.clone(),
        ..binding
    };
    issue(db, issuer, &pbx, &binding, &req.nonce, now)
}

/// `/v1/deactivate`: releases the binding so that another machine can
/// activate with the key.
pub fn deactivate(
    db: &Db,
    body: &[u8],
    sig: Option<&str>,
    now: i64,
) -> Result<DeactivateResponse, ApiError> {
    let req: DeactivateRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the deactivate request is not valid: {e}")))?;
    let pbx = db
        .pbx_by_serial(&req.system_id)?
        .ok_or_else(|| unknown_system(&req.system_id))?;
    let signer = authenticate(db, &pbx, body, sig)?;
    check_fresh(db, &pbx.serial, &req.nonce, req.sent_at, now)?;
    match signer {
        Signer::Current(b) => {
            db.release(&pbx.serial, now, "deactivated", None)?;
            tracing::info!(serial = %pbx.serial, hardware_id = %b.hardware_id, "deactivated");
        }
        // Released already (moved or deactivated before): what the device
        // asks for is true, so say so.
        Signer::Past(_) => {}
        // A replaced key cannot release the binding of the box that holds it.
        Signer::Replaced(_) => return Err(not_registered(&pbx.serial)),
    }
    Ok(DeactivateResponse {
        released: true,
        stamp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::NewPbx;
    use licagent::hwid::{Component, ComponentKind};
    use licagent::license::{Enforcement, KeyRing, Term, TermKind};
    use std::collections::BTreeMap;

    const NOW: i64 = 1_700_000_000;

    struct Env {
        _dir: tempfile::TempDir,
        db: Db,
        key: SigningKey,
        ring: KeyRing,
        portal_key: PortalKey,
        serial: String,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("portal.db")).unwrap();
        db.add_customer("ACME", NOW).unwrap();
        let portal_key = PortalKey::generate();
        db.add_pbx(&NewPbx {
            serial: "SYS-TEST-0001".into(),
            key: portal_key.as_str().into(),
            customer: "ACME".into(),
            name: "Head office".into(),
            term: Term {
                kind: TermKind::Yearly,
                ends_at: order::term_ends_at(TermKind::Yearly, NOW),
            },
            enforcement: Enforcement::Soft,
            seats: BTreeMap::from([("premium".into(), 5)]),
            addons: BTreeMap::new(),
            created_at: NOW,
        })
        .unwrap();
        let (key, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        Env {
            _dir: dir,
            db,
            key,
            ring,
            portal_key,
            serial: "SYS-TEST-0001".into(),
        }
    }

    struct Device {
        key: SigningKey,
        components: Vec<Component>,
    }

    fn device(mac: &str) -> Device {
        Device {
            key: SigningKey::generate().0,
            components: vec![hwid::hash_component(ComponentKind::Mac, mac)],
        }
    }

    fn activation(env: &Env, dev: &Device) -> ActivateRequest {
        ActivateRequest {
            key: env.portal_key.to_string().to_lowercase(),
            hardware_id: hwid::hardware_id(&dev.components),
            components: dev.components.clone(),
            device_public_key: dev.key.public_key().to_base64(),
            nonce: wire::new_nonce(),
            agent_version: "test".into(),
        }
    }

    fn refresh_body(env: &Env, dev: &Device, sent_at: i64) -> Vec<u8> {
        serde_json::to_vec(&RefreshRequest {
            system_id: env.serial.clone(),
            license_id: "lic-x".into(),
            hardware_id: hwid::hardware_id(&dev.components),
            components: dev.components.clone(),
            seats_in_use: BTreeMap::from([("premium".into(), 2)]),
            nonce: wire::new_nonce(),
            sent_at,
            test_sessions: vec![],
        })
        .unwrap()
    }

    #[test]
    fn activation_issues_a_bound_license() {
        let env = env();
        let dev = device("00:11:22:33:44:55");
        let req = activation(&env, &dev);
        let text = activate(&env.db, &Issuer::new(&env.key), &req, Mode::Activate, NOW).unwrap();
        let p = license::verify(&text, &env.ring).unwrap();
        assert_eq!(p.system_id, env.serial);
        assert_eq!(p.hardware_id, req.hardware_id);
        assert_eq!(p.nonce.as_deref(), Some(req.nonce.as_str()));
        assert_eq!(
            p.device_public_key.as_deref(),
            Some(req.device_public_key.as_str())
        );
        assert_eq!(p.refresh_due, Some(NOW + crate::db::DEFAULT_REFRESH_SECS));
        assert_eq!(p.seats["premium"], 5);
        let bound = env.db.pbx(&env.serial).unwrap().binding.unwrap();
        assert_eq!(bound.hardware_id, req.hardware_id);
    }

    #[test]
    fn activation_checks_its_input() {
        let env = env();
        let dev = device("00:11:22:33:44:55");
        let issuer = Issuer::new(&env.key);
        let code = |req: &ActivateRequest| {
            activate(&env.db, &issuer, req, Mode::Activate, NOW)
                .unwrap_err()
                .code
        };
        let mut req = activation(&env, &dev);
        req.hardware_id = "0".repeat(64);
        assert_eq!(code(&req), ErrorCode::BadRequest);
        let mut req = activation(&env, &dev);
        req.nonce = "short".into();
        assert_eq!(code(&req), ErrorCode::BadRequest);
        let mut req = activation(&env, &dev);
        req.device_public_key = "AAAA".into();
        assert_eq!(code(&req), ErrorCode::BadRequest);
        let mut req = activation(&env, &dev);
        req.key = PortalKey::generate().to_string();
        assert_eq!(code(&req), ErrorCode::UnknownKey);
        assert_eq!(env.db.pbx(&env.serial).unwrap().binding, None);
    }

    #[test]
    fn another_machine_needs_rehost_and_the_old_one_learns_it() {
        let env = env();
        let issuer = Issuer::new(&env.key);
        let old = device("00:11:22:33:44:55");
        let new = device("66:77:88:99:aa:bb");
        activate(
            &env.db,
            &issuer,
            &activation(&env, &old),
            Mode::Activate,
            NOW,
        )
        .unwrap();
        // Same machine again is fine.
        activate(
            &env.db,
            &issuer,
            &activation(&env, &old),
            Mode::Activate,
            NOW,
        )
        .unwrap();
        let err = activate(
            &env.db,
            &issuer,
            &activation(&env, &new),
            Mode::Activate,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::BoundElsewhere);
        assert!(err.message.contains("--rehost"), "{}", err.message);
        let new_req = activation(&env, &new);
        activate(&env.db, &issuer, &new_req, Mode::Rehost, NOW).unwrap();
        // The old box's next refresh is answered with a signed revocation.
        let body = refresh_body(&env, &old, NOW);
        let sig = wire::sign_request(&body, &old.key);
        let err = refresh(&env.db, &issuer, &body, Some(&sig), NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::Revoked);
        let req: RefreshRequest = serde_json::from_slice(&body).unwrap();
        let rev = err
            .revocation
            .unwrap()
            .verify_for(&env.ring, &env.serial, &req.nonce)
            .unwrap();
        assert_eq!(rev.moved_to, Some(new_req.hardware_id));
    }

    #[test]
    fn refresh_authenticates_and_checks_clock_and_replay() {
        let env = env();
        let issuer = Issuer::new(&env.key);
        let dev = device("00:11:22:33:44:55");
        activate(
            &env.db,
            &issuer,
            &activation(&env, &dev),
            Mode::Activate,
            NOW,
        )
        .unwrap();
        let body = refresh_body(&env, &dev, NOW + 10);
        let sig = wire::sign_request(&body, &dev.key);
        let code = |body: &[u8], sig: Option<&str>| {
            refresh(&env.db, &issuer, body, sig, NOW).unwrap_err().code
        };
        assert_eq!(code(&body, None), ErrorCode::BadSignature);
        let stranger = SigningKey::generate().0;
        assert_eq!(
            code(&body, Some(&wire::sign_request(&body, &stranger))),
            ErrorCode::BadSignature
        );
        let stale = refresh_body(&env, &dev, NOW - MAX_CLOCK_SKEW_SECS - 1);
        assert_eq!(
            code(&stale, Some(&wire::sign_request(&stale, &dev.key))),
            ErrorCode::StaleRequest
        );
        // Just past the window either way, and the far ends of i64 (no overflow).
        for sent_at in [i64::MIN, i64::MAX, NOW + MAX_CLOCK_SKEW_SECS + 1] {
            let stale = refresh_body(&env, &dev, sent_at);
            assert_eq!(
                code(&stale, Some(&wire::sign_request(&stale, &dev.key))),
                ErrorCode::StaleRequest
            );
        }
        let text = refresh(&env.db, &issuer, &body, Some(&sig), NOW).unwrap();
        assert!(license::verify(&text, &env.ring).is_ok());
        assert_eq!(code(&body, Some(&sig)), ErrorCode::Replayed);
        let p = env.db.pbx(&env.serial).unwrap();
        assert_eq!(p.last_refresh_at, Some(NOW));
        assert_eq!(p.seats_in_use["premium"], 2);
        let mut unknown: RefreshRequest = serde_json::from_slice(&body).unwrap();
        unknown.system_id = "SYS-NONE-0000".into();
        let unknown = serde_json::to_vec(&unknown).unwrap();
        assert_eq!(code(&unknown, Some(&sig)), ErrorCode::UnknownSystem);
    }

    #[test]
    fn deactivate_releases_the_binding() {
        let env = env();
        let issuer = Issuer::new(&env.key);
        let dev = device("00:11:22:33:44:55");
        activate(
            &env.db,
            &issuer,
            &activation(&env, &dev),
            Mode::Activate,
            NOW,
        )
        .unwrap();
        let body = serde_json::to_vec(&DeactivateRequest {
            system_id: env.serial.clone(),
            license_id: "lic-x".into(),
            nonce: wire::new_nonce(),
            sent_at: NOW,
        })
        .unwrap();
        let stranger = SigningKey::generate().0;
        assert_eq!(
            deactivate(
                &env.db,
                &body,
                Some(&wire::sign_request(&body, &stranger)),
                NOW
            )
            .unwrap_err()
            .code,
            ErrorCode::BadSignature
        );
        let sig = wire::sign_request(&body, &dev.key);
        assert!(
            deactivate(&env.db, &body, Some(&sig), NOW)
                .unwrap()
                .released
        );
        assert_eq!(env.db.pbx(&env.serial).unwrap().binding, None);
        assert_eq!(
            env.db.history(&env.serial).unwrap()[0].reason,
            "deactivated"
        );
        // Another machine may now activate without --rehost.
        let other = device("66:77:88:99:aa:bb");
        activate(
            &env.db,
            &issuer,
            &activation(&env, &other),
            Mode::Activate,
            NOW,
        )
        .unwrap();
    }

    #[test]
    fn revoked_pbx_gets_a_signed_revocation() {
        let env = env();
        let issuer = Issuer::new(&env.key);
        let dev = device("00:11:22:33:44:55");
        activate(
            &env.db,
            &issuer,
            &activation(&env, &dev),
            Mode::Activate,
            NOW,
        )
        .unwrap();
        env.db.revoke(&env.serial, "unpaid", NOW).unwrap();
        let body = refresh_body(&env, &dev, NOW);
        let err = refresh(
            &env.db,
            &issuer,
            &body,
            Some(&wire::sign_request(&body, &dev.key)),
            NOW,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::Revoked);
        let rev = err.revocation.unwrap().verify(&env.ring).unwrap();
        assert_eq!(rev.reason, "unpaid");
        let err = activate(
            &env.db,
            &issuer,
            &activation(&env, &dev),
            Mode::Activate,
            NOW,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::Revoked);
    }

    fn rehost(env: &Env, dev: &Device, now: i64) -> Result<String, ApiError> {
        activate(
            &env.db,
            &Issuer::new(&env.key),
            &activation(env, dev),
            Mode::Rehost,
            now,
        )
    }

    #[test]
    fn rehosts_are_limited_per_period() {
        let env = env();
        env.db.set_setting("rehost_limit", "2").unwrap();
        env.db.set_setting("rehost_period_days", "10").unwrap();
        let a = device("00:00:00:00:00:0a");
        let b = device("00:00:00:00:00:0b");
        let usage =
            |now| rehost_usage(&env.db, &env.serial, &env.db.settings().unwrap(), now).unwrap();
        // The first activation binds; it is no rehost.
        rehost(&env, &a, NOW).unwrap();
        assert_eq!(usage(NOW).count, 0);
        rehost(&env, &b, NOW + 100).unwrap();
        // The same hardware again is a re-activation: not counted.
        rehost(&env, &b, NOW + 150).unwrap();
        assert_eq!(usage(NOW + 150).count, 1);
        rehost(&env, &a, NOW + 200).unwrap();
        let full = usage(NOW + 300);
        assert_eq!(
            full,
            RehostUsage {
                count: 2,
                limit: 2,
                period_days: 10,
                next_at: Some(NOW + 100 + 10 * 86_400),
            }
        );
        let err = rehost(&env, &b, NOW + 300).unwrap_err();
        assert_eq!(err.code, ErrorCode::RehostLimit);
        assert_eq!(err.status(), 429);
        for part in [
            "rehosted 2 times in the last 10 days",
            "the limit is 2 per 10 days",
            &order::when(NOW + 100 + 10 * 86_400),
            &format!("licportal pbx reset-rehosts {}", env.serial),
        ] {
            assert!(err.message.contains(part), "{part:?} in {}", err.message);
        }
        // Refused means nothing moved.
        let bound = env.db.pbx(&env.serial).unwrap().binding.unwrap();
        assert_eq!(bound.hardware_id, hwid::hardware_id(&a.components));
        // Re-activating where it is bound still works at the limit.
        rehost(&env, &a, NOW + 300).unwrap();
        // Once the oldest rehost left the period, one more is possible.
        let later = NOW + 100 + 10 * 86_400;
        assert_eq!(usage(later).count, 1);
        assert_eq!(usage(later).next_at, None);
        rehost(&env, &b, later).unwrap();
        assert!(rehost(&env, &a, later + 1).is_err());
        // A reset by the vendor lets it rehost again at once.
        env.db.reset_rehosts(&env.serial, later + 2).unwrap();
        assert_eq!(usage(later + 2).count, 0);
        rehost(&env, &a, later + 2).unwrap();
    }

    #[test]
    fn the_next_rehost_waits_for_enough_to_leave_the_period() {
        let env = env();
        let devs: Vec<Device> = (0..4)
            .map(|i| device(&format!("00:00:00:00:00:0{i}")))
            .collect();
        for (i, dev) in devs.iter().enumerate() {
            rehost(&env, dev, NOW + i as i64).unwrap();
        }
        // Three rehosts (at +1, +2, +3) with the default limit of 3.
        let day = 86_400;
        let settings = env.db.settings().unwrap();
        let u = rehost_usage(&env.db, &env.serial, &settings, NOW + 10).unwrap();
        assert_eq!((u.count, u.limit), (3, 3));
        assert_eq!(u.next_at, Some(NOW + 1 + 365 * day));
        // Lowered to 1, two of them must leave first: the one at +2.
        env.db.set_setting("rehost_limit", "1").unwrap();
        let settings = env.db.settings().unwrap();
        let u = rehost_usage(&env.db, &env.serial, &settings, NOW + 10).unwrap();
        assert_eq!(u.next_at, Some(NOW + 3 + 365 * day));
    }

    #[test]
    fn deactivation_and_activation_are_no_rehosts() {
        let env = env();
        let issuer = Issuer::new(&env.key);
        env.db.set_setting("rehost_limit", "1").unwrap();
        let a = device("00:00:00:00:00:0a");
        let b = device("00:00:00:00:00:0b");
        activate(&env.db, &issuer, &activation(&env, &a), Mode::Activate, NOW).unwrap();
        env.db
            .release(&env.serial, NOW + 1, "deactivated", None)
            .unwrap();
        // Unbound: /v1/rehost only binds.
        rehost(&env, &b, NOW + 2).unwrap();
        let settings = env.db.settings().unwrap();
        let u = rehost_usage(&env.db, &env.serial, &settings, NOW + 3).unwrap();
        assert_eq!(u.count, 0);
        rehost(&env, &a, NOW + 3).unwrap();
    }

    struct TrialEnv {
        _dir: tempfile::TempDir,
        db: Db,
        key: SigningKey,
        ring: KeyRing,
    }

    fn trial_env() -> TrialEnv {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("portal.db")).unwrap();
        let (key, _) = SigningKey::generate();
        let mut ring = KeyRing::empty();
        ring.add(key.public_key());
        TrialEnv {
            _dir: dir,
            db,
            key,
            ring,
        }
    }

    fn trial_request(dev: &Device) -> TrialRequest {
        TrialRequest {
            hardware_id: hwid::hardware_id(&dev.components),
            components: dev.components.clone(),
            device_public_key: dev.key.public_key().to_base64(),
            nonce: wire::new_nonce(),
            agent_version: "test".into(),
        }
    }

    #[test]
    fn a_trial_runs_once_per_machine_from_its_first_download() {
        let env = trial_env();
        let issuer = Issuer::new(&env.key);
        let dev = device("00:11:22:33:44:55");
        let req = trial_request(&dev);
        let first = trial(&env.db, &issuer, &req, NOW).unwrap();
        let p = license::verify(&first, &env.ring).unwrap();
        let ends = NOW + crate::db::DEFAULT_TRIAL_SECS;
        assert_eq!(p.kind, LicenseKind::Trial);
        assert_eq!(p.pbx_name, "Trial");
        assert!(p.system_id.starts_with("TRIAL-"), "{}", p.system_id);
        assert_eq!(p.system_id, trial_system_id(&req.hardware_id));
        assert_eq!(p.hardware_id, req.hardware_id);
        assert_eq!(p.hardware, req.components);
        assert_eq!(
            p.term,
            Term {
                kind: TermKind::Monthly,
                ends_at: Some(ends)
            }
        );
        assert_eq!(p.refresh_due, None);
        assert_eq!(p.enforcement, Enforcement::Hard);
        assert_eq!(p.seats, env.db.settings().unwrap().trial_seats);
        assert_eq!(p.seats["premium"], 5);
        assert!(p.addons.is_empty());
        assert_eq!(p.nonce.as_deref(), Some(req.nonce.as_str()));
        assert_eq!(
            p.device_public_key.as_deref(),
            Some(req.device_public_key.as_str())
        );

        // Later, from the same machine: a fresh license, the same end.
        let again = trial(&env.db, &issuer, &trial_request(&dev), NOW + 1000).unwrap();
        let q = license::verify(&again, &env.ring).unwrap();
        assert_ne!(q.license_id, p.license_id);
        assert_eq!(q.system_id, p.system_id);
        assert_eq!(q.term.ends_at, Some(ends));
        assert_eq!(q.issued_at, NOW + 1000);
        let t = env.db.trial(&req.hardware_id).unwrap().unwrap();
        assert_eq!((t.first_at, t.downloads), (NOW, 2));

        // At its end it is used up, even with a new device key.
        let err = trial(&env.db, &issuer, &trial_request(&dev), ends).unwrap_err();
        assert_eq!(err.code, ErrorCode::TrialUsed);
        assert_eq!(err.status(), 409);
        assert!(
            err.message.contains(&order::when(ends)) && err.message.contains("key"),
            "{}",
            err.message
        );
        let fresh_key = Device {
            key: SigningKey::generate().0,
            components: dev.components.clone(),
        };
        assert_eq!(
            trial(&env.db, &issuer, &trial_request(&fresh_key), ends + 1)
                .unwrap_err()
                .code,
            ErrorCode::TrialUsed
        );

        // Another machine has its own trial.
        let other = device("66:77:88:99:aa:bb");
        let text = trial(&env.db, &issuer, &trial_request(&other), ends).unwrap();
        let o = license::verify(&text, &env.ring).unwrap();
        assert_ne!(o.system_id, p.system_id);
        assert_eq!(o.term.ends_at, Some(ends + crate::db::DEFAULT_TRIAL_SECS));
    }

    #[test]
    fn a_trial_ends_by_the_current_setting() {
        let env = trial_env();
        let issuer = Issuer::new(&env.key);
        let dev = device("00:11:22:33:44:55");
        trial(&env.db, &issuer, &trial_request(&dev), NOW).unwrap();
        env.db.set_setting("trial_secs", "60").unwrap();
        env.db.set_setting("trial_seats", "basic=2").unwrap();
        let text = trial(&env.db, &issuer, &trial_request(&dev), NOW + 59).unwrap();
        let p = license::verify(&text, &env.ring).unwrap();
        assert_eq!(p.term.ends_at, Some(NOW + 60));
        assert_eq!(p.seats, BTreeMap::from([("basic".into(), 2)]));
        assert_eq!(
            trial(&env.db, &issuer, &trial_request(&dev), NOW + 60)
                .unwrap_err()
                .code,
            ErrorCode::TrialUsed
        );
    }

    #[test]
    fn a_trial_request_is_checked_and_a_refusal_records_nothing() {
        let env = trial_env();
        let issuer = Issuer::new(&env.key);
        let dev = device("00:11:22:33:44:55");
        let code = |req: &TrialRequest| trial(&env.db, &issuer, req, NOW).unwrap_err().code;
        let mut req = trial_request(&dev);
        req.hardware_id = "0".repeat(64);
        assert_eq!(code(&req), ErrorCode::BadRequest);
        let mut req = trial_request(&dev);
        req.components.clear();
        assert_eq!(code(&req), ErrorCode::BadRequest);
        let mut req = trial_request(&dev);
        req.nonce = "short".into();
        assert_eq!(code(&req), ErrorCode::BadRequest);
        let mut req = trial_request(&dev);
        req.device_public_key = "AAAA".into();
        assert_eq!(code(&req), ErrorCode::BadRequest);
        assert_eq!(env.db.list_trials().unwrap(), vec![]);
    }

    #[test]
    fn trial_system_ids_are_stable_and_shaped_like_serials() {
        let a = trial_system_id("hw-a");
        assert_eq!(a, trial_system_id("hw-a"));
        assert_ne!(a, trial_system_id("hw-b"));
        assert_eq!(a.len(), "TRIAL-XXXX-XXXX".len());
        assert!(a.starts_with("TRIAL-") && a.as_bytes()[10] == b'-');
        assert!(!a[6..].contains(['I', 'L', 'O', 'U']), "{a}");
    }

    #[test]
    fn issuer_overrides_change_signer_and_nonce() {
        let env = env();
        let throwaway = SigningKey::generate().0;
        let issuer = Issuer {
            license_key: &throwaway,
            portal_key: &env.key,
            nonce_override: Some(wire::new_nonce()),
            protocol: wire::PROTOCOL_VERSION,
        };
        let dev = device("00:11:22:33:44:55");
        let req = activation(&env, &dev);
        let text = activate(&env.db, &issuer, &req, Mode::Activate, NOW).unwrap();
        assert!(matches!(
            license::verify(&text, &env.ring),
            Err(license::LicenseError::UnknownKey(_))
        ));
        let mut ring = KeyRing::empty();
        ring.add(throwaway.public_key());
        let p = license::verify(&text, &ring).unwrap();
        assert_ne!(p.nonce.as_deref(), Some(req.nonce.as_str()));
    }
}
