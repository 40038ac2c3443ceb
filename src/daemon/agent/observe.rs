//! What the event stream sees of the agent: a digest taken under the lock
//! after every change, compared by [`Events::observe`] with the last one.

use super::users::box_reason;
use super::Agent;
use crate::api::events::{Digest, Events, UserDigest};

impl Agent {
    /// Publishes what changed since the last call (nothing the first time).
    /// Called after every API change, refresh and timer tick; cheap when
    /// nothing changed, one pass over the users when something did.
    pub fn publish_changes(&self, events: &Events) {
        let mut inner = self.lock();
        let now = inner.now();
        let status = inner.status(now);
        let over = box_reason(inner.state);
        let ledger = &inner.ledger;
        let digest = Digest {
            state: Some(status.state),
            licensed: status.licensed,
            reason: status.reason.clone(),
            license_id: status.license.as_ref().map(|l| l.license_id.clone()),
            license_kind: status.license.as_ref().map(|l| l.kind),
            seats: ledger
                .summary()
                .into_iter()
                .map(|s| (s.code, (s.purchased, s.used, s.available, s.over)))
                .collect(),
            over_use: ledger.over_use().into_iter().map(|o| o.code).collect(),
            test_until: inner.test_until,
            clock_warning: status.clock.as_ref().and_then(|c| c.warning.clone()),
            users: ledger
                .all()
                .map(|e| {
                    let u = e.user();
                    let digest = UserDigest {
                        extension: u.extension.clone(),
                        licensed: e.licensed(),
                        reason: over.or(e.reason()),
                        missing: e.missing().map(str::to_string).collect(),
                    };
                    (u.id.clone(), digest)
                })
                .collect(),
        };
        // Under the agent's lock, so that two publishers cannot hand their
        // digests over in the wrong order.
        events.observe(digest, now);
        drop(inner);
    }
}
