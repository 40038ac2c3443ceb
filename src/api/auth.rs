//! Who may do what on the socket. Reading needs only a connection (the
//! socket's file mode and group decide who can connect); changing needs
//! uid 0, the daemon's own uid, or membership of the admin group.
//!
//! Membership is judged from the groups the connecting process actually
//! has (SO_PEERCRED and SO_PEERGROUPS, both taken by the kernel when it
//! connected), never from the group database: a service started with
//! `SupplementaryGroups=` is an admin, a listed member that dropped its
//! groups is not.

use std::os::fd::AsRawFd;

use nix::unistd::{Group, Uid};

/// The caller, from SO_PEERCRED and SO_PEERGROUPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups of the connecting process, sorted. Shared: a
    /// peer is cloned for every request on its connection.
    pub groups: std::sync::Arc<[u32]>,
}

/// SO_PEERGROUPS (Linux 4.13): the same number on every architecture
/// licagent ships for (asm-generic), and not in the libc crate yet.
#[cfg(target_os = "linux")]
const SO_PEERGROUPS: libc::c_int = 59;

impl Peer {
    /// The credentials of the process at the other end of `stream`, as the
    /// kernel recorded them at connect(): nothing the caller can change
    /// afterwards, and no /proc lookup that could race with a reused pid.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let c = stream.peer_cred()?;
        Ok(Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
            groups: peer_groups(stream.as_raw_fd())?.into(),
        })
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// "1000, 27, 100": primary group first, for messages.
    fn groups_text(&self) -> String {
        let mut all = vec![self.gid];
        all.extend(self.groups.iter().filter(|&&g| g != self.gid));
        all.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(target_os = "linux")]
fn peer_groups(fd: std::os::fd::RawFd) -> std::io::Result<Vec<u32>> {
    // Asked with room for 64 groups; the kernel says how many there are
    // when that is too small (ERANGE), and the second call fits them all.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of `len` bytes, and the
        // kernel writes at most `len` bytes and sets `len` to what it wrote
        // or needs.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n.min(groups.len()));
            groups.sort_unstable();
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() {
            return Err(err);
        }
        groups.resize(n, 0);
    }
    Err(std::io::Error::from_raw_os_error(libc::ERANGE))
}

#[cfg(not(target_os = "linux"))]
fn peer_groups(_fd: std::os::fd::RawFd) -> std::io::Result<Vec<u32>> {
    Ok(Vec::new())
}

/// The admin rule, resolved once per config (re)load.
#[derive(Clone, Debug)]
pub struct Policy {
    own_uid: u32,
    admin_group: Option<(String, u32)>,
    /// The configured admin group, when it does not exist (for messages).
    missing_group: Option<String>,
}

impl Policy {
    /// `admin_group` empty means no group. An unknown group is logged and
    /// treated as no group: the agent keeps running, only root and its own
    /// user may change things.
    pub fn new(admin_group_name: &str) -> Policy {
        let admin_group = admin_group_name;
        let own_uid = Uid::effective().as_raw();
        let admin_group = match admin_group {
            "" => None,
            name => match Group::from_name(name) {
                Ok(Some(g)) => Some((name.to_string(), g.gid.as_raw())),
                Ok(None) => {
                    tracing::warn!("the admin group {name:?} does not exist; only root and the daemon's user may change the license");
                    None
                }
                Err(e) => {
                    tracing::warn!("cannot look up the admin group {name:?}: {e}");
                    None
                }
            },
        };
        let missing_group = match (&admin_group, admin_group_name) {
            (None, name) if !name.is_empty() => Some(name.to_string()),
            _ => None,
        };
        Policy {
            own_uid,
            admin_group,
            missing_group,
        }
    }

    /// Whether `peer` may change things; `Err` is one sentence for the
    /// caller and the log: who would be allowed (naming the admin group)
    /// and what this caller is.
    pub fn may_change(&self, peer: &Peer) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.own_uid {
            return Ok(());
        }
        let who = || format!("uid {} with groups {}", peer.uid, peer.groups_text());
        let Some((name, gid)) = &self.admin_group else {
            let group = match &self.missing_group {
                Some(name) => format!(
                    "the admin group {name} (api.admin_group) does not exist on this system"
                ),
                None => "no admin group is configured (api.admin_group)".to_string(),
            };
            return Err(format!(
                "only root or the daemon's user (uid {}) may change the license or the users, and {group}; this caller is {}",
                self.own_uid,
                who()
            ));
        };
        if peer.in_group(*gid) {
            return Ok(());
        }
        Err(format!(
            "changing the license or the users needs root, the daemon's user (uid {}) or the group {name} (gid {gid}) among the caller's groups; this caller is {}",
            self.own_uid,
            who()
        ))
    }

    /// Whether `peer` counts as privileged for the connection limits: the
    /// same people who may change things.
    pub fn privileged(&self, peer: &Peer) -> bool {
        self.may_change(peer).is_ok()
    }

    pub fn admin_group_name(&self) -> Option<&str> {
        self.admin_group.as_ref().map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_own_uid_may_change() {
        let p = Policy::new("");
        let me = Uid::effective().as_raw();
        assert!(p
            .may_change(&Peer {
                uid: 0,
                gid: 0,
                pid: None,
                groups: Vec::new().into(),
            })
            .is_ok());
        assert!(p
            .may_change(&Peer {
                uid: me,
                gid: 0,
                pid: None,
                groups: Vec::new().into(),
            })
            .is_ok());
    }

    #[test]
    fn others_may_not_without_the_group() {
        let p = Policy::new("");
        let other = if Uid::effective().as_raw() == 65534 {
            65533
        } else {
            65534
        };
        let err = p
            .may_change(&Peer {
                uid: other,
                gid: 65534,
                pid: None,
                groups: Vec::new().into(),
            })
            .unwrap_err();
        assert!(err.contains("no admin group"), "{err}");
        assert!(
            err.contains(&format!("uid {other} with groups 65534")),
            "{err}"
        );
    }

    #[test]
    fn primary_group_of_admin_group_may_change() {
        // The root group exists everywhere; a caller whose primary gid is
        // the admin group's gid is an admin.
        let p = Policy::new("root");
        let other = if Uid::effective().as_raw() == 65534 {
            65533
        } else {
            65534
        };
        assert!(p
            .may_change(&Peer {
                uid: other,
                gid: 0,
                pid: None,
                groups: Vec::new().into(),
            })
            .is_ok());
        assert!(p
            .may_change(&Peer {
                uid: other,
                gid: 65534,
                pid: None,
                groups: Vec::new().into(),
            })
            .is_err());
    }

    /// Supplementary groups of the process count; the group database does
    /// not (a member who dropped its groups is refused).
    #[test]
    fn supplementary_groups_of_the_process_decide() {
        let p = Policy::new("root");
        let other = if Uid::effective().as_raw() == 65534 {
            65533
        } else {
            65534
        };
        let mut peer = Peer {
            uid: other,
            gid: 65534,
            pid: None,
            groups: vec![0, 100].into(),
        };
        assert!(p.may_change(&peer).is_ok());
        peer.groups = vec![100].into();
        let err = p.may_change(&peer).unwrap_err();
        assert!(err.contains("the group root (gid 0)"), "{err}");
        assert!(err.contains("groups 65534, 100"), "{err}");
    }

    #[test]
    fn unknown_admin_group_means_none() {
        let p = Policy::new("no-such-group-licagent");
        assert_eq!(p.admin_group_name(), None);
    }
}
