//! The agent's link to the portal: activation, scheduled refresh with jitter
//! and capped exponential backoff, revocation, and the offline request code.
//! Network calls happen without holding the agent's lock; what comes back is
//! verified before anything is installed, and a failure leaves the installed
//! license as it was.

use std::sync::{Arc, Mutex, RwLock};

use ring::rand::SecureRandom;
use tracing::{error, info, warn};

use super::agent::{Agent, Expect, ImportError};
use crate::api::types::{RefreshInfo, Status};
use crate::config::{self, Config};
use crate::license::{PortalKey, SigningKey};
use crate::portal::wire::{
    self, ActivateRequest, DeactivateRequest, DeactivateResponse, ErrorCode, LicenseResponse,
    RefreshRequest, RequestCode, SignedStamp, TrialRequest,
};
use crate::portal::{PortalClient, PortalError};
use crate::time;

/// Refresh starts this long before it is due at most (a quarter of the
/// license's refresh interval when that is shorter).
const MAX_LEAD_SECS: i64 = 86_400;

pub struct Link {
    client: RwLock<Option<Arc<PortalClient>>>,
    device: SigningKey,
    refresh_cfg: RwLock<config::Refresh>,
    schedule: Mutex<Schedule>,
    /// One portal call at a time; a refresh due while an activation runs
    /// waits its turn.
    busy: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Schedule {
    /// The license the plan was made for; a new license gets a new plan.
    planned_for: Option<String>,
    next_at: Option<i64>,
    failures: u32,
    last_success: Option<i64>,
    last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Key(#[from] crate::license::KeyError),
    #[error("{0}")]
    Portal(#[from] PortalError),
    #[error("{0}")]
    License(#[from] ImportError),
    #[error("no license from the portal is installed here (activate first)")]
    NothingToRefresh,
    #[error("the portal revoked this license: {0}")]
    Revoked(String),
}

impl Link {
    pub fn new(config: &Config, device: SigningKey) -> Link {
        let link = Link {
            client: RwLock::new(None),
            device,
            refresh_cfg: RwLock::new(config.refresh.clone()),
            schedule: Mutex::new(Schedule::default()),
            busy: tokio::sync::Mutex::new(()),
        };
        link.reconfigure(config);
        link
    }

    /// Takes `[portal]` and `[refresh]` anew (start and reload). A client
    /// that cannot be built is logged; the PBX keeps its license.
    pub fn reconfigure(&self, config: &Config) {
        let client = match PortalClient::from_config(&config.portal) {
            Ok(c) => c.map(Arc::new),
            Err(e) => {
                error!("{e}");
                None
            }
        };
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = client;
        *self.refresh_cfg.write().unwrap_or_else(|p| p.into_inner()) = config.refresh.clone();
    }

    fn client(&self) -> Result<Arc<PortalClient>, PortalError> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(PortalError::NotConfigured)
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn device_public_key(&self) -> String {
        self.device.public_key().to_base64()
    }

    /// Activates with a PBX key. The same machine and key again is a fresh
    /// license, not an error.
    pub async fn activate(
        &self,
        agent: &Agent,
        key: &str,
        rehost: bool,
    ) -> Result<Status, LinkError> {
        let key = PortalKey::parse(key)?;
        let client = self.client()?;
        let _busy = self.busy.lock().await;
        let hw = agent.hardware();
        let nonce = wire::new_nonce();
        let device = self.device_public_key();
        let req = ActivateRequest {
            key: key.as_str().to_string(),
            hardware_id: hw.hardware_id.clone(),
            components: hw.components.clone(),
            device_public_key: device.clone(),
            nonce: nonce.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let path = if rehost {
            wire::REHOST_PATH
        } else {
            wire::ACTIVATE_PATH
        };
        info!(key = %key.redacted(), rehost, "activating with the portal");
        let resp = client.license(path, &req, None).await.inspect_err(|e| {
            warn!(key = %key.redacted(), "activation failed: {e}");
        });
        let resp = self.stamped(agent, resp, &nonce)?;
        let before = agent.refresh_target().map(|t| t.system_id);
        // The key names the system: activating is the explicit choice of
        // it, so another system's license is replaced (and said so).
        let status = self
            .install(agent, &resp, &nonce, &device, true)
            .inspect_err(
                |e| warn!(key = %key.redacted(), "the portal's license was refused: {e}"),
            )?;
        if let (Some(old), Some(new)) = (before, status.license.as_ref()) {
            if old != new.system_id {
                warn!(from = %old, to = %new.system_id, "activation switched this box to another system; its users stay");
            }
        }
        self.succeeded(agent.now());
        agent.wake();
        Ok(status)
    }

    /// Takes the portal's time from an answer or a refusal: a verified
    /// stamp bound to `nonce` resets trusted time. Returns the answer.
    fn stamped(
        &self,
        agent: &Agent,
        resp: Result<LicenseResponse, PortalError>,
        nonce: &str,
    ) -> Result<LicenseResponse, PortalError> {
        let stamp = match &resp {
            Ok(r) => r.stamp.as_ref(),
            Err(PortalError::Refused { stamp, .. }) => stamp.as_deref(),
            Err(_) => None,
        };
        self.take_stamp(agent, stamp, nonce);
        resp
    }

    /// Verifies a stamp and hands its time to the agent; the portal time
    /// when it verified.
    fn take_stamp(&self, agent: &Agent, stamp: Option<&SignedStamp>, nonce: &str) -> Option<i64> {
        match stamp?.verify_for(&agent.key_ring(), nonce) {
            Ok(s) => {
                agent.portal_time(s.millis());
                Some(s.now)
            }
            Err(e) => {
                warn!("{e}");
                None
            }
        }
    }

    /// Installs a license the portal sent in answer to `nonce`.
    fn install(
        &self,
        agent: &Agent,
        resp: &LicenseResponse,
        nonce: &str,
        device: &str,
        replace: bool,
    ) -> Result<Status, ImportError> {
        let portal_time_ms = resp
            .stamp
            .as_ref()
            .and_then(|s| s.verify_for(&agent.key_ring(), nonce).ok())
            .map(|s| s.millis());
        agent.accept(
            &resp.license,
            Some(Expect {
                nonce,
                device_public_key: device,
                portal_time_ms,
            }),
            replace,
        )
    }

    /// Asks the portal for this machine's trial license (once per machine;
    /// the same trial again while it runs).
    pub async fn trial(&self, agent: &Agent, replace: bool) -> Result<Status, LinkError> {
        // Refused before any call: asking the portal would start the
        // machine's one trial for nothing.
        agent.check_trial_allowed(replace)?;
        let client = self.client()?;
        let _busy = self.busy.lock().await;
        let hw = agent.hardware();
        let nonce = wire::new_nonce();
        let device = self.device_public_key();
        let req = TrialRequest {
            hardware_id: hw.hardware_id.clone(),
            components: hw.components.clone(),
            device_public_key: device.clone(),
            nonce: nonce.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let resp = client.license(wire::TRIAL_PATH, &req, None).await;
        let resp = self.stamped(agent, resp, &nonce)?;
        let status = self.install(agent, &resp, &nonce, &device, replace)?;
        info!("trial license installed");
        Ok(status)
    }

    /// Refreshes now: a signed request with the seats in use; the answer is
    /// the current license, or a verified revocation. A request refused as
    /// stale is sent once more when the refusal's stamp corrected trusted
    /// time: a PBX whose clock is wrong still refreshes.
    pub async fn refresh(&self, agent: &Agent) -> Result<Status, LinkError> {
        let client = self.client()?;
        let _busy = self.busy.lock().await;
        let target = agent.refresh_target().ok_or(LinkError::NothingToRefresh)?;
        let mut result = self.refresh_once(&client, agent, &target).await;
        if let Err((
            LinkError::Portal(PortalError::Refused {
                code: ErrorCode::StaleRequest,
                ..
            }),
            true,
        )) = &result
        {
            info!("the portal corrected this agent's time; sending the refresh again");
            result = self.refresh_once(&client, agent, &target).await;
        }
        let result = result.map_err(|(e, _)| e);
        match &result {
            Ok(_) => {
                info!(system_id = %target.system_id, "license refreshed");
                self.succeeded(agent.now());
            }
            Err(LinkError::Revoked(_)) => {
                // The portal answered, with a verdict: no refresh is due any
                // more, and an older refresh error is no longer the news.
                let mut s = self.schedule();
                s.next_at = None;
                s.failures = 0;
                s.last_error = None;
            }
            Err(e) => self.failed(e, agent.now()),
        }
        agent.wake();
        result
    }

    /// One refresh call. The error comes with whether a verified stamp
    /// came with it.
    async fn refresh_once(
        &self,
        client: &PortalClient,
        agent: &Agent,
        target: &super::agent::RefreshTarget,
    ) -> Result<Status, (LinkError, bool)> {
        let hw = agent.hardware();
        let nonce = wire::new_nonce();
        let (session_ids, test_sessions) = agent.test_sessions_to_report();
        let req = RefreshRequest {
            system_id: target.system_id.clone(),
            license_id: target.license_id.clone(),
            hardware_id: hw.hardware_id.clone(),
            components: hw.components.clone(),
            seats_in_use: agent.seats_in_use(),
            nonce: nonce.clone(),
            // Trusted time, not the wall clock.
            sent_at: agent.now(),
            test_sessions,
        };
        let device = self.device_public_key();
        match client
            .license(wire::REFRESH_PATH, &req, Some(&self.device))
            .await
        {
            Ok(resp) => {
                // The portal answered the request: it has the sessions.
                agent.test_sessions_reported(&session_ids);
                // `install` takes the stamp's time before it checks.
                self.install(agent, &resp, &nonce, &device, false)
                    .map_err(|e| (LinkError::from(e), true))
            }
            Err(PortalError::Refused {
                code: ErrorCode::Revoked,
                message,
                revocation: Some(signed),
                stamp,
            }) => {
                let stamped = self.take_stamp(agent, stamp.as_deref(), &nonce).is_some();
                match signed.verify_for(&agent.key_ring(), &target.system_id, &nonce) {
                    Ok(rev) => {
                        let mut reason = rev.reason.clone();
                        if let Some(to) = &rev.moved_to {
                            reason.push_str(&format!(" (the license moved to hardware {to})"));
                        }
                        warn!(system_id = %target.system_id, "{message}");
                        if let Err(e) = agent.revoke(&reason) {
                            error!("cannot save the revocation: {e}");
                        }
                        Err((LinkError::Revoked(reason), stamped))
                    }
                    Err(e) => Err((
                        LinkError::Portal(PortalError::Garbage(e.to_string())),
                        stamped,
                    )),
                }
            }
            Err(e) => {
                let stamp = match &e {
                    PortalError::Refused { stamp, .. } => stamp.as_deref(),
                    _ => None,
                };
                let stamped = self.take_stamp(agent, stamp, &nonce).is_some();
                Err((e.into(), stamped))
            }
        }
    }

    /// Releases this box's binding at the portal (signed by the device key).
    pub async fn deactivate(&self, agent: &Agent) -> Result<(), LinkError> {
        let client = self.client()?;
        let _busy = self.busy.lock().await;
        let target = agent.refresh_target().ok_or(LinkError::NothingToRefresh)?;
        let nonce = wire::new_nonce();
        let req = DeactivateRequest {
            system_id: target.system_id,
            license_id: target.license_id,
            nonce: nonce.clone(),
            sent_at: agent.now(),
        };
        let body = client
            .post(wire::DEACTIVATE_PATH, &req, Some(&self.device))
            .await;
        let body = match body {
            Err(PortalError::Refused {
                code: ErrorCode::StaleRequest,
                stamp: Some(stamp),
                ..
            }) if self.take_stamp(agent, Some(&*stamp), &nonce).is_some() => {
                // Sent again with the corrected time; any other refusal
                // stands as it is.
                let req = DeactivateRequest {
                    sent_at: agent.now(),
                    nonce: wire::new_nonce(),
                    ..req
                };
                client
                    .post(wire::DEACTIVATE_PATH, &req, Some(&self.device))
                    .await?
            }
            other => other?,
        };
        let _: DeactivateResponse = serde_json::from_slice(&body)
            .map_err(|_| PortalError::Garbage("not a deactivation answer".into()))?;
        Ok(())
    }

    /// The offline request code for `key`: carried to the portal by hand.
    pub fn request_code(&self, agent: &Agent, key: &str) -> Result<String, LinkError> {
        let key = PortalKey::parse(key)?;
        let hw = agent.hardware();
        let code = RequestCode {
            key: key.as_str().to_string(),
            hardware_id: hw.hardware_id,
            components: hw.components,
            device_public_key: self.device_public_key(),
            nonce: wire::new_nonce(),
        };
        Ok(code.encode())
    }

    fn succeeded(&self, now: i64) {
        let mut s = self.schedule();
        s.failures = 0;
        s.last_error = None;
        s.last_success = Some(now);
        // Re-planned from the new license by `due`.
        s.planned_for = None;
        s.next_at = None;
    }

    fn failed(&self, e: &LinkError, now: i64) {
        let cfg = self
            .refresh_cfg
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut s = self.schedule();
        s.failures = s.failures.saturating_add(1);
        let backoff = backoff_secs(s.failures, cfg.retry_min_secs, cfg.retry_max_secs);
        s.next_at = Some(now.saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX)));
        s.last_error = Some(e.to_string());
        warn!(
            failures = s.failures,
            retry_in_secs = backoff,
            "refresh failed: {e}"
        );
    }

    /// When the next refresh should start, planning it for a new license.
    /// `None`: nothing to refresh.
    pub fn next_refresh_at(&self, agent: &Agent) -> Option<i64> {
        let target = agent.refresh_target()?;
        let mut s = self.schedule();
        if s.planned_for.as_deref() != Some(target.license_id.as_str()) {
            let jitter_max = self
                .refresh_cfg
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .jitter_secs
                .min(i64::MAX as u64) as i64;
            s.planned_for = Some(target.license_id.clone());
            if s.failures == 0 || s.next_at.is_none() {
                s.next_at = Some(plan(
                    target.issued_at,
                    target.refresh_due,
                    jitter_max,
                    random_u64(),
                ));
            }
        }
        s.next_at
    }

    pub fn info(&self, agent: &Agent) -> RefreshInfo {
        let next = self.next_refresh_at(agent);
        let s = self.schedule();
        RefreshInfo {
            next_refresh: next.map(time::rfc3339),
            last_refresh: s.last_success.map(time::rfc3339),
            last_error: s.last_error.clone(),
            failures: s.failures,
        }
    }
}

/// When a license issued at `issued` and due at `due` is refreshed: ahead of
/// due by a quarter of its interval (a day at most), then up to
/// `jitter_max` later at random, never past half the lead, so that a fleet
/// spreads out and still refreshes before grace starts.
pub fn plan(issued: i64, due: i64, jitter_max: i64, random: u64) -> i64 {
    // Saturating: the times come from a license, and one that slipped past
    // the range checks (an old store row) must not panic the daemon at start.
    let lead = (due.saturating_sub(issued) / 4).clamp(0, MAX_LEAD_SECS);
    let span = jitter_max.min(lead / 2).max(0);
    let jitter = if span > 0 {
        (random % (span as u64 + 1)) as i64
    } else {
        0
    };
    due.saturating_sub(lead).saturating_add(jitter)
}

/// `min * 2^(failures-1)`, capped at `max`.
pub fn backoff_secs(failures: u32, min: u64, max: u64) -> u64 {
    let shift = failures.saturating_sub(1).min(32);
    min.saturating_mul(1u64 << shift).min(max)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let got: Vec<u64> = (1..=8).map(|n| backoff_secs(n, 60, 3600)).collect();
        assert_eq!(got, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff_secs(1000, 60, 3600), 3600);
    }

    #[test]
    fn plan_refreshes_before_due_within_the_jitter() {
        let issued = 1_000_000;
        let due = issued + 86_400;
        let lead = 86_400 / 4;
        for r in [0u64, 1, 299, 300, u64::MAX] {
            let at = plan(issued, due, 300, r);
            assert!(at >= due - lead && at <= due - lead + 300, "{at}");
            assert!(at < due);
        }
        // A one-year interval leads by a day at most.
        assert_eq!(plan(0, 365 * 86_400, 0, 7), 365 * 86_400 - 86_400);
        // Short test intervals keep the jitter under half the lead.
        let at = plan(0, 8, 300, 5);
        assert!((6..=7).contains(&at), "{at}");
    }

    /// The crash loop of issue 10: `issued_at = i64::MIN` overflowed the
    /// subtraction at every start. Extremes now give a time, never a panic.
    #[test]
    fn plan_takes_extreme_times_without_overflow() {
        for (issued, due) in [
            (i64::MIN, 1_800_000_000),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (0, i64::MAX),
            (i64::MIN, i64::MIN),
        ] {
            for r in [0, 1, u64::MAX] {
                let at = plan(issued, due, i64::MAX, r);
                assert!(
                    at <= due.saturating_add(MAX_LEAD_SECS),
                    "{issued} {due} {at}"
                );
            }
        }
        assert_eq!(
            plan(i64::MIN, 1_800_000_000, 0, 0),
            1_800_000_000 - MAX_LEAD_SECS
        );
    }
}
