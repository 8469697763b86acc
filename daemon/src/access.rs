//! Hand-in privacy (`[access]`): who may download a file, decided from who
//! stored it ([`Origin`]) and who asks. A pure rule, the same for every
//! download protocol; the services ask it through
//! [`crate::ctx::Ctx::open_for`] and [`crate::ctx::Ctx::tree_for`].
//!
//! Under `downloads = "sender"` (the default):
//! - a file ferry received from a student's address is that address's: it
//!   downloads it, and so do `admin` networks;
//! - a file ferry did not receive (an admin put it in the storage) and one
//!   uploaded from an `admin` network are published: anyone downloads them;
//! - a file ferry received with no sender on record (from a ferryd of
//!   before) is an admin's only.
//!
//! Names are not secret (the naming policy shows a taken name anyway, as a
//! numbered one); contents are.

use std::net::IpAddr;

use ferry_config::{Access, Downloads};

use crate::storage::Origin;

/// One address as ferry counts it: an IPv4 client reaching a dual-stack
/// socket is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn is_admin(access: &Access, peer: IpAddr) -> bool {
    access.admin.iter().any(|net| net.contains(canonical(peer)))
}

/// Who an upload from `peer` is from: a publisher on an `admin` network, a
/// sender anywhere else (recorded whatever the mode, so a later switch to
/// `sender` finds every file's sender).
pub(crate) fn origin_for(access: &Access, peer: IpAddr) -> Origin {
    match is_admin(access, peer) {
        true => Origin::Publisher(canonical(peer)),
        false => Origin::Sender(canonical(peer)),
    }
}

/// Why a download is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Handed in from another address.
    AnotherSender,
    /// Received with no sender on record: an admin's only.
    Unrecorded,
}

/// Whether `peer` may download a file stored by `origin`.
pub(crate) fn may_download(access: &Access, peer: IpAddr, origin: Origin) -> Result<(), Refusal> {
    if access.downloads == Downloads::Anyone || is_admin(access, peer) {
        return Ok(());
    }
    match origin {
        Origin::Placed | Origin::Publisher(_) => Ok(()),
        Origin::Sender(ip) if ip == canonical(peer) => Ok(()),
        Origin::Sender(_) => Err(Refusal::AnotherSender),
        Origin::Unrecorded => Err(Refusal::Unrecorded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn access(downloads: Downloads, admin: &[&str]) -> Access {
        Access {
            downloads,
            admin: admin.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_hand_in_is_its_senders_and_the_admins() {
        let a = access(Downloads::Sender, &["10.9.0.0/16"]);
        let alice = ip("10.1.0.2");
        let from_alice = origin_for(&a, alice);
        assert_eq!(from_alice, Origin::Sender(alice));
        assert_eq!(may_download(&a, alice, from_alice), Ok(()));
        assert_eq!(
            may_download(&a, ip("10.1.0.3"), from_alice),
            Err(Refusal::AnotherSender)
        );
        // A neighbour in the same IPv6 /64 is another address.
        let v6 = origin_for(&a, ip("2001:db8::1"));
        assert_eq!(
            may_download(&a, ip("2001:db8::2"), v6),
            Err(Refusal::AnotherSender)
        );
        // The same IPv4 client reaching a dual-stack socket.
        assert_eq!(may_download(&a, ip("::ffff:10.1.0.2"), from_alice), Ok(()));
        assert_eq!(may_download(&a, ip("10.9.3.4"), from_alice), Ok(()));
        assert_eq!(
            may_download(&a, alice, Origin::Unrecorded),
            Err(Refusal::Unrecorded)
        );
        assert_eq!(may_download(&a, ip("10.9.3.4"), Origin::Unrecorded), Ok(()));
    }

    #[test]
    fn placed_and_admin_uploads_are_published() {
        let a = access(Downloads::Sender, &["10.9.0.0/16"]);
        let published = origin_for(&a, ip("10.9.0.1"));
        assert_eq!(published, Origin::Publisher(ip("10.9.0.1")));
        for o in [published, Origin::Placed] {
            assert_eq!(may_download(&a, ip("10.1.0.3"), o), Ok(()));
        }
    }

    #[test]
    fn anyone_means_anyone() {
        let a = access(Downloads::Anyone, &[]);
        let o = origin_for(&a, ip("10.1.0.2"));
        assert_eq!(o, Origin::Sender(ip("10.1.0.2")));
        assert_eq!(may_download(&a, ip("10.1.0.3"), o), Ok(()));
        assert_eq!(may_download(&a, ip("10.1.0.3"), Origin::Unrecorded), Ok(()));
    }
}
