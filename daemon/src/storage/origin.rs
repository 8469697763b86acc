//! Who stored a file: recorded beside it when ferry receives it (an
//! extended attribute on the local backend, a field of the catalog entry on
//! S3) and read back when it is opened. Hand-in privacy
//! ([`crate::access`]) decides on it; the naming policy never lets one
//! sender's upload replace or stand in for another's.

use std::net::IpAddr;

/// Who stored a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// Not received by ferry: put in the storage by an admin.
    Placed,
    /// Received from this address: a hand-in.
    Sender(IpAddr),
    /// Received from an `access.admin` address: published.
    Publisher(IpAddr),
    /// Received by ferry with no sender on record (stored by a ferryd from
    /// before senders were recorded, or the record is unreadable): only an
    /// admin may download it.
    Unrecorded,
}

/// Longest record written (`publisher ` and an IPv6 address).
pub(crate) const MAX_RECORD: usize = 64;

impl Origin {
    /// The record kept beside the file; `None` for what ferry never writes.
    pub(crate) fn record(&self) -> Option<String> {
        match self {
            Origin::Sender(ip) => Some(format!("sender {ip}")),
            Origin::Publisher(ip) => Some(format!("publisher {ip}")),
            Origin::Placed | Origin::Unrecorded => None,
        }
    }

    /// Reads a record back; anything else is [`Origin::Unrecorded`] (never
    /// taken as placed, which would publish it).
    pub(crate) fn parse(record: &[u8]) -> Origin {
        let Some((kind, ip)) = std::str::from_utf8(record)
            .ok()
            .and_then(|t| t.split_once(' '))
        else {
            return Origin::Unrecorded;
        };
        match (kind, ip.parse::<IpAddr>()) {
            ("sender", Ok(ip)) => Origin::Sender(ip),
            ("publisher", Ok(ip)) => Origin::Publisher(ip),
            _ => Origin::Unrecorded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_anything_else_is_unrecorded() {
        for o in [
            Origin::Sender("127.0.0.2".parse().unwrap()),
            Origin::Publisher("2001:db8::1".parse().unwrap()),
            Origin::Sender("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
        ] {
            let r = o.record().unwrap();
            assert!(r.len() <= MAX_RECORD, "{r}");
            assert_eq!(Origin::parse(r.as_bytes()), o);
        }
        for junk in [
            &b""[..],
            b"sender",
            b"sender x",
            b"owner 1.2.3.4",
            b"\xff\xfe",
        ] {
            assert_eq!(Origin::parse(junk), Origin::Unrecorded);
        }
        assert_eq!(Origin::Placed.record(), None);
    }
}
