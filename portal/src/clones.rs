//! The duplicate rule: one system seen refreshing from two boxes within a
//! window (a cloned board image, a copied VM) is marked duplicate; the box
//! seen first keeps the license and the other is refused with the signed
//! `duplicate` error until it is rehosted properly.
//!
//! The portal remembers every (hardware ID, device key) a system was seen
//! with ("sightings"). A single change of hardware ID is a NIC swap and is
//! followed, as before; two hardware IDs that both keep refreshing within
//! the window are two boxes. A device key replaced by a re-activation that
//! still signs refreshes within the window is a second box too.

use licagent::portal::wire::ErrorCode;
use rusqlite::{params, OptionalExtension};

use crate::db::{Binding, Db, DbError};
use crate::service::ApiError;

/// Version 3 of the schema: sightings and duplicates.
pub const SCHEMA_V3: &str = "
CREATE TABLE sightings (
    serial            TEXT NOT NULL REFERENCES pbx(serial),
    hardware_id       TEXT NOT NULL,
    device_public_key TEXT NOT NULL,
    first_at          INTEGER NOT NULL,
    last_at           INTEGER NOT NULL,
    PRIMARY KEY (serial, hardware_id, device_public_key)
);
-- At most one open duplicate per PBX: the box that is refused.
CREATE TABLE duplicates (
    serial            TEXT PRIMARY KEY REFERENCES pbx(serial),
    hardware_id       TEXT NOT NULL,
    device_public_key TEXT NOT NULL,
    kept_hardware_id  TEXT NOT NULL,
    detected_at       INTEGER NOT NULL,
    last_at           INTEGER NOT NULL,
    attempts          INTEGER NOT NULL
);
";

/// Default of the `duplicate_window_secs` setting: three days, so that two
/// boxes refreshing once a day each (the default interval) are seen
/// alternating at least once before the window closes.
pub const DEFAULT_DUPLICATE_WINDOW_SECS: i64 = 3 * 24 * 60 * 60;

/// One (hardware ID, device key) a system was seen with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub hardware_id: String,
    pub device_public_key: String,
    pub first_at: i64,
    pub last_at: i64,
}

/// The box a PBX's license is refused to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub hardware_id: String,
    pub device_public_key: String,
    /// The box that keeps the license.
    pub kept_hardware_id: String,
    pub detected_at: i64,
    pub last_at: i64,
    pub attempts: u32,
}

impl Db {
    /// Records that `serial` was seen from this box at `now`.
    pub fn sight(
        &self,
        serial: &str,
        hardware_id: &str,
        device_public_key: &str,
        now: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO sightings (serial, hardware_id, device_public_key, first_at, last_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (serial, hardware_id, device_public_key) DO UPDATE SET last_at = ?4",
            params![serial, hardware_id, device_public_key, now],
        )?;
        Ok(())
    }

    /// Every box `serial` was seen from, first seen first.
    pub fn sightings(&self, serial: &str) -> Result<Vec<Sighting>, DbError> {
        let mut stmt = self.conn().prepare(
            "SELECT hardware_id, device_public_key, first_at, last_at FROM sightings
             WHERE serial = ?1 ORDER BY first_at, last_at",
        )?;
        let rows = stmt
            .query_map([serial], |r| {
                Ok(Sighting {
                    hardware_id: r.get(0)?,
                    device_public_key: r.get(1)?,
                    first_at: r.get(2)?,
                    last_at: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn duplicate(&self, serial: &str) -> Result<Option<Duplicate>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT hardware_id, device_public_key, kept_hardware_id, detected_at, last_at,
                        attempts
                 FROM duplicates WHERE serial = ?1",
                [serial],
                |r| {
                    Ok(Duplicate {
                        hardware_id: r.get(0)?,
                        device_public_key: r.get(1)?,
                        kept_hardware_id: r.get(2)?,
                        detected_at: r.get(3)?,
                        last_at: r.get(4)?,
                        attempts: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn mark_duplicate(&self, serial: &str, d: &Duplicate) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO duplicates (serial, hardware_id, device_public_key,
                 kept_hardware_id, detected_at, last_at, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                serial,
                d.hardware_id,
                d.device_public_key,
                d.kept_hardware_id,
                d.detected_at,
                d.last_at,
                d.attempts
            ],
        )?;
        Ok(())
    }

    /// The refused box tried again.
    pub fn duplicate_attempt(&self, serial: &str, now: i64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE duplicates SET last_at = ?2, attempts = attempts + 1 WHERE serial = ?1",
            params![serial, now],
        )?;
        Ok(())
    }

    /// A rehost settled which box holds the license.
    pub fn clear_duplicate(&self, serial: &str) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM duplicates WHERE serial = ?1", [serial])?;
        Ok(())
    }
}

/// What the rule says about a refresh from (`hardware_id`, `key`) of a
/// system bound to `bound_hardware_id`, given its sightings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// One box (or a NIC swap): go on.
    Fine,
    /// Two boxes; this one was seen first and keeps the license, the other
    /// (`refused`) is marked.
    KeepThis { refused: Sighting },
    /// Two boxes; this one is refused, `kept` holds the license.
    RefuseThis { kept: String },
}

/// The rule itself, on the sightings alone (no I/O), so that it is unit
/// tested with times as inputs.
pub fn judge(
    sightings: &[Sighting],
    bound_hardware_id: &str,
    hardware_id: &str,
    now: i64,
    window: i64,
) -> Verdict {
    if hardware_id == bound_hardware_id {
        return Verdict::Fine;
    }
    let recent = |hw: &str| {
        sightings
            .iter()
            .filter(|s| s.hardware_id == hw && now.saturating_sub(s.last_at) <= window)
            .min_by_key(|s| s.first_at)
    };
    match (recent(hardware_id), recent(bound_hardware_id)) {
        // This box was seen before, and the bound one too, both within the
        // window: they alternate.
        (Some(this), Some(bound)) => {
            if this.first_at <= bound.first_at {
                Verdict::KeepThis {
                    refused: bound.clone(),
                }
            } else {
                Verdict::RefuseThis {
                    kept: bound.hardware_id.clone(),
                }
            }
        }
        // A first sighting of new hardware: a NIC swap, followed.
        _ => Verdict::Fine,
    }
}

/// The refusal of the box that lost the duplicate rule.
pub fn refusal(serial: &str, kept: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Duplicate,
        format!(
            "this license ({serial}) is in use on another box (hardware {}); move it here with `licagent activate KEY --rehost`",
            short_id(kept)
        ),
    )
}

fn short_id(hw: &str) -> &str {
    hw.get(..16).unwrap_or(hw)
}

/// The duplicate rule (`crate::clones`) for a refresh from `hardware_id`
/// signed by the bound device's key.
pub fn check(
    db: &Db,
    serial: &str,
    binding: &Binding,
    hardware_id: &str,
    now: i64,
    window: i64,
) -> Result<(), ApiError> {
    if let Some(d) = db.duplicate(serial)? {
        if d.hardware_id == hardware_id && d.device_public_key == binding.device_public_key {
            db.duplicate_attempt(serial, now)?;
            return Err(refusal(serial, &d.kept_hardware_id));
        }
    }
    let seen = db.sightings(serial)?;
    match judge(&seen, &binding.hardware_id, hardware_id, now, window) {
        Verdict::Fine => Ok(()),
        Verdict::KeepThis { refused } => {
            tracing::warn!(serial, kept = hardware_id, refused = %refused.hardware_id, "duplicate: two boxes refresh one system");
            db.mark_duplicate(
                serial,
                &Duplicate {
                    hardware_id: refused.hardware_id,
                    device_public_key: binding.device_public_key.clone(),
                    kept_hardware_id: hardware_id.to_string(),
                    detected_at: now,
                    last_at: refused.last_at,
                    attempts: 0,
                },
            )?;
            Ok(())
        }
        Verdict::RefuseThis { kept } => {
            tracing::warn!(serial, kept = %kept, refused = hardware_id, "duplicate: two boxes refresh one system");
            db.mark_duplicate(
                serial,
                &Duplicate {
                    hardware_id: hardware_id.to_string(),
                    device_public_key: binding.device_public_key.clone(),
                    kept_hardware_id: kept.clone(),
                    detected_at: now,
                    last_at: now,
                    attempts: 1,
                },
            )?;
            Err(refusal(serial, &kept))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 3 * 86_400;

    fn s(hw: &str, first: i64, last: i64) -> Sighting {
        Sighting {
            hardware_id: hw.into(),
            device_public_key: "k".into(),
            first_at: first,
            last_at: last,
        }
    }

    #[test]
    fn one_box_and_a_nic_swap_are_fine() {
        assert_eq!(judge(&[s("a", 0, 10)], "a", "a", 20, W), Verdict::Fine);
        // New hardware seen for the first time: followed.
        assert_eq!(judge(&[s("a", 0, 10)], "a", "b", 20, W), Verdict::Fine);
        // The old hardware comes back after the window: still one box.
        let seen = [s("a", 0, 10), s("b", 20, 20)];
        assert_eq!(judge(&seen, "b", "a", 20 + W + 11, W), Verdict::Fine);
    }

    #[test]
    fn two_boxes_alternating_within_the_window_are_a_duplicate() {
        let seen = [s("a", 0, 10), s("b", 20, 20)];
        // A comes back while bound to B: A was first and keeps it.
        assert_eq!(
            judge(&seen, "b", "a", 30, W),
            Verdict::KeepThis {
                refused: s("b", 20, 20)
            }
        );
        // B comes back while bound to A: B is refused.
        let seen = [s("a", 0, 40), s("b", 20, 20)];
        assert_eq!(
            judge(&seen, "a", "b", 50, W),
            Verdict::RefuseThis { kept: "a".into() }
        );
    }
}
