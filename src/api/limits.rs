//! Connection limits that keep the socket usable for its owner: how many
//! connections each uid may hold, how many all unprivileged callers may
//! hold together, and a separate pool for root, the daemon's own uid and
//! the admin group that no unprivileged caller can fill. The numbers are
//! sized from the process's file-descriptor limit at start, so a lowered
//! `RLIMIT_NOFILE` shrinks the caps instead of letting accept() fail for
//! everybody. See docs/operations.md, "Limits".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Largest request body for everything but the two bulk routes: a license
/// file or a JSON body is a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// A bulk import or restore may be as large as the CSV limit, plus slack so
/// that the CSV parser (not the transport) says what is wrong with a file
/// just over.
pub const MAX_BULK_BODY: usize = crate::seats::csv::MAX_BYTES + 64 * 1024;
/// A body the agent will not use (too large, or from a caller who may not
/// send it) is still read and thrown away up to this many bytes, so that
/// the caller gets to read the refusal instead of a broken pipe. Beyond
/// it the answer is sent and the connection closed.
pub const MAX_DRAIN: u64 = 16 * 1024 * 1024;
/// Request bodies held in memory at once, over all connections. A caller
/// over the budget waits (up to the body timeout, `api.body_timeout_secs`) for others to finish.
pub const BODY_BUDGET: usize = 64 * 1024 * 1024;

/// File descriptors kept for everything that is not an API connection:
/// the SQLite files, the listener, the journal, the runtime, hooks.
const FIXED_FDS: u64 = 64;
/// Caps when file descriptors are plentiful.
const MAX_PRIVILEGED: usize = 256;
const MAX_UNPRIVILEGED: usize = 512;
const MAX_PER_UID: usize = 64;

/// The caps in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Connections root, the daemon's uid and the admin group may hold
    /// together (their own pool).
    pub privileged: usize,
    /// Connections all other callers may hold together.
    pub unprivileged: usize,
    /// Connections one unprivileged uid may hold.
    pub per_uid: usize,
}

impl Caps {
    /// Caps that fit in `nofile` descriptors.
    pub fn for_nofile(nofile: u64) -> Caps {
        let budget = nofile.saturating_sub(FIXED_FDS).max(4) as usize;
        let privileged = MAX_PRIVILEGED.min(budget / 2).max(2);
        let unprivileged = MAX_UNPRIVILEGED.min(budget - privileged.min(budget)).max(2);
        let per_uid = MAX_PER_UID.min(unprivileged / 4).max(1);
        Caps {
            privileged,
            unprivileged,
            per_uid,
        }
    }

    /// Descriptors the caps need at most, fixed ones included.
    pub fn fds_needed(&self) -> u64 {
        (self.privileged + self.unprivileged) as u64 + FIXED_FDS
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (what systemd's
/// `LimitNOFILE=` set) and returns the caps that fit in it.
pub fn caps_from_rlimit() -> Caps {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let nofile = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            1024
        } else {
            if lim.rlim_cur < lim.rlim_max {
                // Both fields of the hard limit's type: rlim_t.
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            // rlim_t is 32 bits on armv7.
            #[allow(clippy::unnecessary_cast)]
            let cur = lim.rlim_cur as u64;
            cur
        }
    };
    Caps::for_nofile(nofile)
}

/// Counts open connections and admits or refuses new ones.
pub struct Gate {
    caps: Caps,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    privileged: usize,
    unprivileged: usize,
    per_uid: HashMap<u32, usize>,
}

/// One admitted connection; dropping it frees its place.
pub struct Ticket {
    gate: Arc<Gate>,
    uid: Option<u32>,
}

impl Gate {
    pub fn new(caps: Caps) -> Arc<Gate> {
        Arc::new(Gate {
            caps,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// A place for a connection of `uid`, or the sentence the caller gets.
    pub fn admit(self: &Arc<Gate>, uid: u32, privileged: bool) -> Result<Ticket, String> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if privileged {
            if c.privileged >= self.caps.privileged {
                return Err(format!(
                    "the agent has {} privileged connections open, its limit; close some and retry",
                    c.privileged
                ));
            }
            c.privileged += 1;
            return Ok(Ticket {
                gate: self.clone(),
                uid: None,
            });
        }
        let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.caps.per_uid {
            return Err(format!(
                "uid {uid} has {mine} connections open to the agent, the limit per user; close some and retry"
            ));
        }
        if c.unprivileged >= self.caps.unprivileged {
            return Err(format!(
                "the agent has {} connections open from unprivileged users, its limit; retry later",
                c.unprivileged
            ));
        }
        c.unprivileged += 1;
        *c.per_uid.entry(uid).or_insert(0) += 1;
        Ok(Ticket {
            gate: self.clone(),
            uid: Some(uid),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.gate.counts.lock().unwrap_or_else(|p| p.into_inner());
        match self.uid {
            None => c.privileged = c.privileged.saturating_sub(1),
            Some(uid) => {
                c.unprivileged = c.unprivileged.saturating_sub(1);
                if let Some(n) = c.per_uid.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.per_uid.remove(&uid);
                    }
                }
            }
        }
    }
}

/// Gives freed heap back to the system after a large body: glibc keeps
/// freed memory in its arenas (a spike of 200 × 1 MiB stayed resident for
/// good), `malloc_trim` returns what is free. A no-op elsewhere.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_in_the_descriptor_limit() {
        for nofile in [16u64, 64, 128, 256, 1024, 2048, 65536, u64::MAX] {
            let c = Caps::for_nofile(nofile);
            assert!(c.per_uid >= 1 && c.per_uid <= c.unprivileged, "{c:?}");
            if nofile >= 256 {
                assert!(c.fds_needed() <= nofile, "{nofile}: {c:?}");
            }
        }
        let big = Caps::for_nofile(2048);
        assert_eq!(
            big,
            Caps {
                privileged: MAX_PRIVILEGED,
                unprivileged: MAX_UNPRIVILEGED,
                per_uid: MAX_PER_UID
            }
        );
        assert!(
            big.fds_needed() <= 1024,
            "the default soft limit holds them"
        );
    }

    #[test]
    fn a_uid_is_capped_and_privileged_callers_keep_their_pool() {
        let gate = Gate::new(Caps {
            privileged: 2,
            unprivileged: 3,
            per_uid: 2,
        });
        let a1 = gate.admit(1000, false).unwrap();
        let _a2 = gate.admit(1000, false).unwrap();
        let err = gate.admit(1000, false).err().unwrap();
        assert!(err.contains("uid 1000 has 2 connections"), "{err}");
        let _b1 = gate.admit(1001, false).unwrap();
        let err = gate.admit(1002, false).err().unwrap();
        assert!(err.contains("unprivileged users"), "{err}");
        // Root still gets in while the unprivileged pool is full.
        let r1 = gate.admit(0, true).unwrap();
        let _r2 = gate.admit(0, true).unwrap();
        assert!(gate.admit(0, true).is_err());
        drop(r1);
        assert!(gate.admit(0, true).is_ok());
        drop(a1);
        assert!(gate.admit(1000, false).is_ok());
    }
}
