//! Which service answered: a reply recognised as another service's, or a
//! port that is another service's on a ferryd with its defaults, so a
//! student pointing `ferry` at the wrong port is told which.

use ferry_config::ServiceId;

/// The service whose reply `reply` is, when it is unmistakably one's, with
/// what gives it away.
pub(crate) fn answered_like(reply: &[u8]) -> Option<(ServiceId, &'static str)> {
    let text = String::from_utf8_lossy(reply);
    match reply {
        b"PON" => Some((ServiceId::Signal, "PON")),
        // `ERR`, a length of at most 4096 (its first byte at most 0x10,
        // never a letter as in `ERROR:`), and no more than that after it.
        [b'E', b'R', b'R', hi, lo, rest @ ..]
            if *hi <= 0x10 && usize::from(u16::from_be_bytes([*hi, *lo])) >= rest.len() =>
        {
            Some((ServiceId::Signal, "an ERR frame"))
        }
        [0x49, 0x7E, 2, ..] => Some((ServiceId::MagicDownload, "a FileResponse")),
        _ if reply.starts_with(b"go ahead") || reply.starts_with(b"STORED: ") => {
            Some((ServiceId::TcpUpload, "`go ahead`"))
        }
        _ if text.contains("the number must be an integer from 1 to 100") => {
            Some((ServiceId::UdpSum, "a sum's range error"))
        }
        _ if text.trim_start().starts_with('{') && text.contains("\"number\"") => {
            Some((ServiceId::UdpSum, "a sum's answer"))
        }
        _ => None,
    }
}

/// What to tell about `port`, asked for `expected`: the service its reply
/// looks like, or the service whose default port it is.
pub(crate) fn hint(expected: ServiceId, port: u16, reply: Option<&[u8]>) -> Option<String> {
    let home = format!(
        "{expected} is on port {} on a ferryd with its defaults (--{})",
        expected.default_port(),
        expected.port_flag()
    );
    if let Some((other, sign)) = reply
        .and_then(answered_like)
        .filter(|(other, _)| *other != expected)
    {
        return Some(format!(
            "port {port} answered like {other} ({sign}); {home}"
        ));
    }
    let owner = ServiceId::ALL
        .into_iter()
        .find(|s| *s != expected && s.default_port() == port)?;
    Some(format!(
        "port {port} is {owner}'s on a ferryd with its defaults; {home}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_recognised() {
        let mut err = b"ERR\0\x14unknown tag \"\\0\\0\\0\"".to_vec();
        err.truncate(25);
        for (reply, service) in [
            (&b"PON"[..], ServiceId::Signal),
            (&err[..], ServiceId::Signal),
            (&[0x49, 0x7E, 2, 0, 0, 0, 0][..], ServiceId::MagicDownload),
            (b"go ahead", ServiceId::TcpUpload),
            (
                b"ERROR: 1500000 is out of range: the number must be an integer from 1 to 100",
                ServiceId::UdpSum,
            ),
            (
                br#"{"name": "Server of ferry", "number": 42}"#,
                ServiceId::UdpSum,
            ),
        ] {
            assert_eq!(answered_like(reply).map(|(s, _)| s), Some(service));
        }
        assert_eq!(answered_like(b"1452"), None);
        assert_eq!(answered_like(b"ERROR: no such file"), None);
    }

    #[test]
    fn the_hint_names_the_service_that_answered_or_owns_the_port() {
        let h = hint(ServiceId::TcpUpload, 9005, Some(b"ERR\0\x03abc")).unwrap();
        assert_eq!(
            h,
            "port 9005 answered like signal (an ERR frame); tcp_upload is on port 9003 on a ferryd with its defaults (--tcp-upload-port)"
        );
        let h = hint(ServiceId::Signal, 9003, None).unwrap();
        assert_eq!(
            h,
            "port 9003 is tcp_upload's on a ferryd with its defaults; signal is on port 9005 on a ferryd with its defaults (--signal-port)"
        );
        assert_eq!(hint(ServiceId::Signal, 9005, None), None);
        assert_eq!(hint(ServiceId::Signal, 40000, Some(b"xyz")), None);
    }
}
