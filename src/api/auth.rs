//! Who may do what on the socket. Reading needs only a connection (the
//! socket's file mode and group decide who can connect); changing needs
//! uid 0, the daemon's own uid, or membership of the admin group.

use nix::unistd::{Gid, Group, Uid, User};

/// The caller, from SO_PEERCRED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The admin rule, resolved once per config (re)load.
#[derive(Clone, Debug)]
pub struct Policy {
    own_uid: u32,
    admin_group: Option<(String, u32)>,
}

impl Policy {
    /// `admin_group` empty means no group. An unknown group is logged and
    /// treated as no group: the agent keeps running, only root and its own
    /// user may change things.
    pub fn new(admin_group: &str) -> Policy {
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
        Policy {
            own_uid,
            admin_group,
        }
    }

    /// Whether `peer` may change things; `Err` says why not, for the log.
    pub fn may_change(&self, peer: &Peer) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.own_uid {
            return Ok(());
        }
        let Some((name, gid)) = &self.admin_group else {
            return Err(format!(
                "uid {} is neither root nor the daemon's user, and no admin group is configured",
                peer.uid
            ));
        };
        if peer.gid == *gid || is_member(peer.uid, peer.gid, *gid) {
            return Ok(());
        }
        Err(format!("uid {} is not in the admin group {name}", peer.uid))
    }

    pub fn admin_group_name(&self) -> Option<&str> {
        self.admin_group.as_ref().map(|(n, _)| n.as_str())
    }
}

/// Supplementary groups of the peer's user, from the group database.
fn is_member(uid: u32, primary: u32, gid: u32) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(primary))
        .map(|groups| groups.iter().any(|g| g.as_raw() == gid))
        .unwrap_or(false)
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
                pid: None
            })
            .is_ok());
        assert!(p
            .may_change(&Peer {
                uid: me,
                gid: 0,
                pid: None
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
            })
            .unwrap_err();
        assert!(err.contains("no admin group"), "{err}");
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
                pid: None
            })
            .is_ok());
        assert!(p
            .may_change(&Peer {
                uid: other,
                gid: 65534,
                pid: None
            })
            .is_err());
    }

    #[test]
    fn unknown_admin_group_means_none() {
        let p = Policy::new("no-such-group-licagent");
        assert_eq!(p.admin_group_name(), None);
    }
}
