//! What a failed client did wrong, in plain words, sans-IO: from the
//! service, the reason ferryd gave, the first bytes the client sent and how
//! far the transfer got, a [`Diagnosis`] for the lab page. Each names the
//! protocol book's section that states the rule (served at `/book`).

use ferry_config::{ServiceId, Transport};
use ferry_proto::names::NameError;
pub(crate) use ferry_proto::show::{hex, printable as text};
use ferry_proto::signal::handout::HandoutError;
use ferry_proto::tcp_upload::TcpUploadError;
use ferry_proto::udp_upload::UdpUploadError;
use serde::Serialize;

use crate::failure::{Awaited, Failure, Refusal, Violation, When};
use crate::storage::StorageError;

/// Bytes of a client's request kept for the diagnosis (shown in hex and text).
pub(crate) const HEAD_LEN: usize = 64;

/// A failure explained for a student.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Diagnosis {
    /// What the client sent first, in hex (at most [`HEAD_LEN`] bytes).
    pub sent_hex: String,
    /// The same bytes as text, unprintable ones as `.`.
    pub sent_text: String,
    /// What the protocol expected at that point.
    pub expected: String,
    /// The rule the client broke, and what to change.
    pub rule: String,
    /// The protocol book's section (its heading) that states the rule.
    pub section: &'static str,
}

/// What is known of a failed attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failed<'a> {
    /// The service.
    pub service: ServiceId,
    /// Why it failed: the diagnosis matches on this.
    pub failure: &'a Failure,
    /// The reason ferryd gave (`failure` as text), quoted in rules.
    pub reason: &'a str,
    /// The first bytes the client sent in this attempt.
    pub head: &'a [u8],
    /// The name the client asked for (as parsed), if it got that far.
    pub requested: &'a str,
    /// Bytes moved before the failure.
    pub bytes: u64,
    /// Where each service listens on this server (indexed by
    /// [`ServiceId::index`]; `None`: not served); the default ports when
    /// not known.
    pub ports: Option<&'a [Option<u16>; 6]>,
}

impl Failed<'_> {
    /// `service`'s port here, as a phrase: "UDP port 9000", or that it is
    /// not served.
    fn port_of(&self, service: ServiceId) -> String {
        let port = match self.ports {
            Some(ports) => ports[service.index()],
            None => Some(service.default_port()),
        };
        let transport = match service.transport() {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        };
        match port {
            Some(p) => format!("{transport} port {p}"),
            None => "not served on this server".to_owned(),
        }
    }
}

/// Explains a failure; every failure gets a diagnosis, the specific ones for
/// the mistakes students make, a general one otherwise.
pub(crate) fn diagnose(f: &Failed<'_>) -> Diagnosis {
    // What arrived first: another service's request on this port is told
    // as such, whatever this service made of it; then a name's own problem.
    let explained = wrong_port(f).or_else(|| name_problem(f));
    // Every service has its diagnosis: a seventh does not compile without one.
    let (expected, rule, section) = explained.unwrap_or_else(|| match f.service {
        ServiceId::TcpUpload => tcp_upload(f),
        ServiceId::MagicDownload => magic(f),
        ServiceId::Signal => signal(f),
        ServiceId::UdpUpload => udp_upload(f),
        ServiceId::UdpDownload => udp_download(f),
        ServiceId::UdpSum => general(f, section(ServiceId::UdpSum)),
    });
    Diagnosis {
        sent_hex: hex(f.head),
        sent_text: text(f.head),
        expected,
        rule,
        section,
    }
}

type Explained = (String, String, &'static str);

/// The protocol book's section of each service.
fn section(service: ServiceId) -> &'static str {
    match service {
        ServiceId::UdpUpload => "udp_upload (9000/udp)",
        ServiceId::UdpDownload => "udp_download (9001/udp)",
        ServiceId::UdpSum => "udp_sum (9002/udp)",
        ServiceId::TcpUpload => "tcp_upload (9003/tcp)",
        ServiceId::MagicDownload => "magic_download (9004/tcp)",
        ServiceId::Signal => "signal (9005/tcp)",
    }
}

/// What each service expects a client to send first.
fn opening(service: ServiceId) -> &'static str {
    match service {
        ServiceId::UdpUpload => "a file_info datagram: JSON with the file's checksum, name and size, then the data in datagrams",
        ServiceId::UdpDownload => "a datagram holding the name of a stored file; the file then comes in 2048-byte chunks",
        ServiceId::UdpSum => "a client name and a number from 1 to 100 (`Client of Ann:7`, or JSON)",
        ServiceId::TcpUpload => "an 8-byte big-endian size and the file name, then the file's bytes once the server answers `go ahead`",
        ServiceId::MagicDownload => "a FileRequest: 0x497E (2 bytes), type 1 (1 byte), the name's length (2 bytes, big-endian), the name (1..1024 bytes of UTF-8)",
        ServiceId::Signal => "a request, PIN, SAF, RAF, SAR, RAR or CLS (3 bytes), then its parts (ferry's framing or the handout's pauses)",
    }
}

/// Which service's opening bytes `head` are, when they are unmistakably
/// one's, with what gives it away. A bare name (udp_download's request)
/// could be anything, so it is never claimed.
pub(crate) fn looks_like(head: &[u8]) -> Option<(ServiceId, &'static str)> {
    const TAGS: [&[u8; 3]; 6] = [b"SAF", b"RAF", b"SAR", b"RAR", b"PIN", b"CLS"];
    if let [0x49, 0x7E, rest @ ..] = head {
        if matches!(rest.first(), None | Some(1 | 2)) {
            return Some((
                ServiceId::MagicDownload,
                "they start with the magic number 0x497E",
            ));
        }
    }
    if head.len() >= 3 && TAGS.iter().any(|t| head[..3] == t[..]) {
        return Some((ServiceId::Signal, "they start with a signal request tag"));
    }
    let trimmed = head.trim_ascii_start();
    if trimmed.starts_with(b"{") {
        if contains(trimmed, b"\"checksum\"") {
            return Some((ServiceId::UdpUpload, "a JSON file_info with a checksum"));
        }
        if contains(trimmed, b"\"number\"") {
            return Some((ServiceId::UdpSum, "a JSON object with a number"));
        }
    }
    // A size under 1 TiB (its first three bytes zero) and printable text
    // after it: a tcp_upload header.
    if head.len() > 8
        && head[..3] == [0, 0, 0]
        && head[8..].iter().take(8).all(|b| (0x20..0x7f).contains(b))
    {
        return Some((
            ServiceId::TcpUpload,
            "an 8-byte big-endian size, then a name",
        ));
    }
    if sum_request(head) {
        return Some((ServiceId::UdpSum, "a name, a separator and a number"));
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `Client of Ann:7`: printable text, one of udp_sum's separators, then one
/// to three digits and nothing else.
fn sum_request(head: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(head) else {
        return false;
    };
    let text = text.trim_end();
    let Some(cut) = text.rfind([':', ',', ';', '|', '\n']) else {
        return false;
    };
    let (name, number) = (&text[..cut], text[cut + 1..].trim());
    !name.trim().is_empty()
        && !name.chars().any(char::is_control)
        && (1..=3).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Another service's request on this service's port.
fn wrong_port(f: &Failed<'_>) -> Option<Explained> {
    if f.bytes > 0 {
        return None;
    }
    let (other, sign) = looks_like(f.head)?;
    if other == f.service {
        return None;
    }
    let rule = format!(
        "These bytes look like a {other} request ({sign}), but they came to {here}, which serves {service}. {other} is on {there}: send the request there (ferry's client: `--{flag} N`).",
        here = f.port_of(f.service),
        service = f.service,
        there = f.port_of(other),
        flag = other.port_flag(),
    );
    Some((opening(f.service).to_owned(), rule, section(other)))
}

/// A name refused for what it is: each rule said with what to change.
fn name_problem(f: &Failed<'_>) -> Option<Explained> {
    let (error, shown) = match f.failure {
        Failure::Refused(Refusal::Name { error, shown, .. }) => (error, shown.as_str()),
        Failure::Refused(Refusal::RequestedName(error)) => (error, f.requested),
        _ => return None,
    };
    let trailing_newline = shown.ends_with('\n')
        && !shown
            .trim_end_matches(['\n', '\r'])
            .chars()
            .any(char::is_control);
    // In tcp_upload a name with control characters inside, or far too
    // long, is most often the file's data run into it: its own rule says so.
    let ran_on = matches!(
        error,
        NameError::Control(_)
            | NameError::Nul
            | NameError::TooLong { .. }
            | NameError::ComponentTooLong(_)
            | NameError::NotUtf8
    ) && !trailing_newline;
    if f.service == ServiceId::TcpUpload && ran_on {
        return None;
    }
    let rule = match error {
        NameError::Control(0x0A | 0x0D) if trailing_newline => format!(
            "The name {shown:?} ends in a line break. A name read with `readline()`, from a file or typed at a prompt keeps its `\\n`: strip it (`name.strip()`) before sending."
        ),
        NameError::Control(c) => format!(
            "The name {:?} holds control character U+{c:04X}. Names are printable text; a control character in one usually means other bytes (a length, the file's data) were read as part of the name.",
            clip(shown, 80)
        ),
        NameError::Nul => "The name holds a NUL byte: a C-style terminator or padding was sent with it. Send the name's bytes only.".to_owned(),
        NameError::Empty => "The name is empty (or only separators): send the file's name.".to_owned(),
        NameError::DotComponent | NameError::Absolute | NameError::EmptyComponent => format!(
            "{:?}: {error}. A name is stored inside the server's storage root only: no `..`, no leading `/`, no empty parts.",
            clip(shown, 80)
        ),
        NameError::TooLong { .. } | NameError::ComponentTooLong(_) => format!(
            "{error}: send a shorter name. A name far longer than expected often has other bytes (the file's data) run into it."
        ),
        NameError::Reserved => "Names starting with `.ferry` are the server's own: choose another name.".to_owned(),
        NameError::NotUtf8 => "The name is not UTF-8: encode it (`name.encode('utf-8')`) before sending.".to_owned(),
    };
    let expected =
        "a file name: printable text, at most 255 bytes, no `..`, no control characters".to_owned();
    Some((expected, rule, "Rules common to both"))
}

fn not_found(f: &Failed<'_>, section: &'static str) -> Option<Explained> {
    matches!(f.failure, Failure::Storage(StorageError::NotFound(_))).then(|| {
        (
            "the name of a file that is stored on this server".to_owned(),
            format!(
                "There is no file named {:?} here. Names are case-sensitive; a download names a path inside the storage root (\"course/lab1.py\"), and an upload is stored under the last part of the name it was sent with.",
                f.requested
            ),
            section,
        )
    })
}

/// (Name refusals that are not run-on data were told by `name_problem`.)
fn tcp_upload(f: &Failed<'_>) -> Explained {
    const SECTION: &str = "tcp_upload (9003/tcp)";
    let name_ran_on = f.requested.len() > 255
        || f.requested.chars().any(|c| c.is_control())
        || matches!(
            f.failure,
            Failure::Refused(Refusal::Name { .. })
                | Failure::Violation(Violation::TcpUpload(
                    TcpUploadError::HeaderTooLong { .. } | TcpUploadError::NotUtf8
                ))
        );
    if f.bytes == 0 && name_ran_on {
        let read = if f.requested.is_empty() {
            text(f.head)
        } else {
            f.requested.to_owned()
        };
        return (
            "an 8-byte big-endian size and the file name, then nothing until the server answers `go ahead`".into(),
            format!(
                "The client sent the file's bytes right after the name without waiting for `go ahead`, so they ran into the name (ferry read the name as {:?}). Read the `go ahead` reply before sending the data (seed 002, step 7).",
                clip(&read, 80)
            ),
            SECTION,
        );
    }
    if f.bytes == 0 && matches!(f.failure, Failure::Closed(When::BeforeGoAhead)) && f.head.len() > 8
    {
        return (
            "an 8-byte big-endian size and the file name, then nothing until the server answers `go ahead`".into(),
            format!(
                "The client sent {:?} after the size and closed without reading `go ahead`: send the size and the name, wait for `go ahead`, then send the file's bytes (seed 002, steps 5 to 8).",
                clip(&text(&f.head[8..]), 80)
            ),
            SECTION,
        );
    }
    if f.bytes == 0
        && matches!(
            f.failure,
            Failure::Timeout(Awaited::Data) | Failure::Closed(When::Early(_))
        )
    {
        return (
            "the file's bytes after `go ahead`, as many as the header announced".into(),
            format!(
                "No file data came after `go ahead`. If the client sent the file before reading `go ahead`, its bytes were taken as part of the name (ferry read {:?}): wait for `go ahead`, then send.",
                clip(f.requested, 80)
            ),
            SECTION,
        );
    }
    if matches!(f.failure, Failure::Closed(_)) && f.bytes > 0 {
        return (
            "as many bytes as the 8-byte size announced".into(),
            format!(
                "The connection closed after {} bytes, fewer than the header announced: send the whole file before closing, and announce its real size (big-endian, 8 bytes).",
                f.bytes
            ),
            SECTION,
        );
    }
    if f.head.len() >= 8
        && f.bytes == 0
        && matches!(
            f.failure,
            Failure::Violation(Violation::TcpUpload(TcpUploadError::TooLarge { .. }))
        )
    {
        let size = u64::from_be_bytes(f.head[..8].try_into().unwrap_or([0; 8]));
        return (
            "an 8-byte big-endian size no larger than the server's limit".into(),
            format!(
                "The first 8 bytes read as the size {size}: if that is not the file's size, the client packed it little-endian or in fewer bytes (Python: `len(data).to_bytes(8, 'big')` or `struct.pack('!Q', n)`)."
            ),
            SECTION,
        );
    }
    general(f, SECTION)
}

fn magic(f: &Failed<'_>) -> Explained {
    const SECTION: &str = "magic_download (9004/tcp)";
    if let Some(e) = not_found(f, SECTION) {
        return e;
    }
    let expected = opening(ServiceId::MagicDownload).to_owned();
    match f.head {
        [a, b, ..] if [*a, *b] != [0x49, 0x7E] => {
            let rule = format!(
                "The request starts with 0x{a:02X}{b:02X}, not the magic number 0x497E, so the server closed the connection without an answer (as the assignment says it must). Pack it big-endian: `bytearray([0x49, 0x7E, 1, n >> 8, n & 0xFF])`."
            );
            (expected, rule, SECTION)
        }
        [_, _, t, ..] if *t != 1 => {
            let rule = format!(
                "The type byte is {t}, but a FileRequest has type 1 (2 is the server's FileResponse)."
            );
            (expected, rule, SECTION)
        }
        [_, _, _, hi, lo, rest @ ..] if gone(f.failure) => {
            let n = usize::from(*hi) << 8 | usize::from(*lo);
            let rule = format!(
                "The header announced a name of {n} bytes and {} came{}. Send the header and the whole name without a pause of 1 s (the assignment's read gap), and count the name's bytes after encoding it to UTF-8.",
                rest.len(),
                if rest.len() >= HEAD_LEN - 5 { " (at least)" } else { "" }
            );
            (expected, rule, SECTION)
        }
        _ if gone(f.failure) => {
            let rule = format!(
                "Only {} bytes of the 5-byte header came before {}. Send the whole FileRequest at once, or at least without a pause of 1 s.",
                f.head.len(),
                if matches!(f.failure, Failure::Timeout(_)) { "the read gap ran out" } else { "the connection closed" }
            );
            (expected, rule, SECTION)
        }
        _ => (expected, f.reason.to_owned(), SECTION),
    }
}

fn signal(f: &Failed<'_>) -> Explained {
    const SECTION: &str = "signal (9005/tcp)";
    const HANDOUT: &str = "The handout's dialect";
    if let Some(e) = not_found(f, SECTION) {
        return e;
    }
    if matches!(
        f.failure,
        Failure::Violation(Violation::Handout(HandoutError::LostPause(_)))
    ) {
        return (
            "the file name alone, a pause of 0.1 s, then the data".into(),
            format!(
                "The name {:?} and the bytes after it reached ferry together: {} A handout client cannot be told apart from its data without the pause, so ferry stored nothing rather than guess. Send the file again; if it keeps happening, the server is overloaded or the client's sends are held back (a full send buffer after a large file).",
                clip(f.requested, 80),
                f.reason
            ),
            HANDOUT,
        );
    }
    if matches!(f.failure, Failure::Violation(Violation::Ambiguous(_))) {
        return (
            "the file's data, a pause of 0.1 s, `DON` alone, a pause, then the next name".into(),
            format!(
                "{}: inside a SAR ferry cannot tell where this file ends, so it stored nothing and closed the connection. Send the directory again.",
                f.reason
            ),
            HANDOUT,
        );
    }
    if matches!(
        f.failure,
        Failure::Timeout(Awaited::RestOfFileOrDon)
            | Failure::Closed(When::BeforeDon)
            | Failure::Violation(Violation::Handout(HandoutError::NoDon))
    ) {
        return (
            "the file's data, a pause of 0.1 s, then `DON` on its own".into(),
            "The file never ended: after its data the client must pause and send `DON` alone (seed 004's `send_file`). Without it ferry cannot tell where the file ends, so nothing was stored.".into(),
            HANDOUT,
        );
    }
    if matches!(
        f.failure,
        Failure::Violation(Violation::UnexpectedInFile(_) | Violation::UnexpectedInTree(_))
    ) {
        return (
            "a request: PIN, SAF, RAF, SAR, RAR or CLS (3 bytes), then its parts".into(),
            f.reason.to_owned(),
            SECTION,
        );
    }
    if matches!(
        f.failure,
        Failure::Storage(StorageError::ChecksumMismatch { .. })
            | Failure::Violation(Violation::EntryChecksum { .. })
    ) {
        return (
            "the file's CRC-32 after its data".into(),
            format!(
                "{}: the bytes changed on the way, or the client computed the CRC-32 over other bytes than it sent.",
                f.reason
            ),
            SECTION,
        );
    }
    general(f, SECTION)
}

fn udp_upload(f: &Failed<'_>) -> Explained {
    const SECTION: &str = "udp_upload (9000/udp)";
    if matches!(
        f.failure,
        Failure::Violation(Violation::UdpUpload(
            UdpUploadError::ChecksumMismatch { .. }
        ))
    ) {
        return (
            "a CRC-32 in file_info equal to the CRC-32 of the bytes sent".into(),
            format!(
                "{}. The CRC-32 must be zlib's (`zlib.crc32(data) & 0xFFFFFFFF`) over the file's bytes exactly as sent (read in binary mode), written as 8 hex digits (`\"%08X\"`); a CRC over the JSON, a file read as text, or a lost datagram each make it differ. ferry refuses the file, and the client should send it again.",
                f.reason
            ),
            SECTION,
        );
    }
    if matches!(
        f.failure,
        Failure::Violation(
            Violation::UdpUpload(
                UdpUploadError::BadChecksum(_)
                    | UdpUploadError::BadJson(_)
                    | UdpUploadError::HeaderTooLong { .. }
            ) | Violation::NoSession(_)
        )
    ) {
        return (
            "file_info as JSON: {\"checksum\": \"97F6DB4F\", \"name\": \"photo.jpg\", \"size\": 65066}".into(),
            format!("{}.", f.reason),
            SECTION,
        );
    }
    if matches!(
        f.failure,
        Failure::Violation(Violation::OverBufferSize { .. })
    ) {
        return (
            "data datagrams no larger than the buffer size the server announced".into(),
            format!("{}: read the buffer size from the server's reply to file_info and cut the file into pieces of at most that many bytes.", f.reason),
            SECTION,
        );
    }
    if matches!(f.failure, Failure::Timeout(_)) {
        return (
            "the next data datagram".into(),
            format!(
                "The upload stopped after {} bytes: no datagram came for the session timeout. The client stopped sending, or its datagrams were lost; it should send the file again from the file_info.",
                f.bytes
            ),
            SECTION,
        );
    }
    general(f, SECTION)
}

fn udp_download(f: &Failed<'_>) -> Explained {
    const SECTION: &str = "udp_download (9001/udp)";
    if let Some(e) = not_found(f, SECTION) {
        return e;
    }
    general(f, SECTION)
}

/// The client stopped sending: a wait ran out, or it closed.
fn gone(f: &Failure) -> bool {
    matches!(f, Failure::Timeout(_) | Failure::Closed(_))
}

fn general(f: &Failed<'_>, section: &'static str) -> Explained {
    (opening(f.service).to_owned(), f.reason.to_owned(), section)
}

/// `s` cut to `max` characters, `…` marking the cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::magic::MagicError;
    use ferry_proto::names::NameError;
    use ferry_proto::signal::handout::{Ambiguous, LostPause};

    /// The diagnosis of `failure` on `service` after `head`, nothing stored.
    fn diagnosed(service: ServiceId, failure: Failure, head: &[u8], requested: &str) -> Diagnosis {
        let reason = failure.to_string();
        diagnose(&Failed {
            service,
            failure: &failure,
            reason: &reason,
            head,
            requested,
            bytes: 0,
            ports: None,
        })
    }

    /// Each service's opening, as a student's client sends it.
    fn openings() -> Vec<(ServiceId, Vec<u8>)> {
        let mut tcp = 11u64.to_be_bytes().to_vec();
        tcp.extend_from_slice(b"notes.txt");
        vec![
            (ServiceId::Signal, b"SAFlab1.py".to_vec()),
            (ServiceId::Signal, b"PIN".to_vec()),
            (
                ServiceId::MagicDownload,
                vec![0x49, 0x7E, 1, 0, 5, b'a', b'.', b't', b'x', b't'],
            ),
            (ServiceId::TcpUpload, tcp),
            (
                ServiceId::UdpUpload,
                br#"{"checksum": "97F6DB4F", "name": "photo.jpg", "size": 65066}"#.to_vec(),
            ),
            (ServiceId::UdpSum, b"Client of Ann:7".to_vec()),
            (
                ServiceId::UdpSum,
                br#"{"name": "Client of Ann", "number": 7}"#.to_vec(),
            ),
        ]
    }

    #[test]
    fn each_services_opening_is_recognised_and_a_bare_name_is_no_ones() {
        for (service, head) in openings() {
            assert_eq!(
                looks_like(&head).map(|(s, _)| s),
                Some(service),
                "{}",
                text(&head)
            );
        }
        for nobody in [&b"lab1.py"[..], b"hello world", b"\0\0\0", b"ab:1234", b""] {
            assert_eq!(looks_like(nobody), None, "{}", text(nobody));
        }
    }

    #[test]
    fn another_services_request_is_told_where_that_service_is() {
        let ports = [
            Some(9000),
            Some(9001),
            Some(9002),
            Some(9003),
            None,
            Some(9005),
        ];
        for (sent_to, _) in openings() {
            for (service, head) in openings() {
                if service == sent_to {
                    continue;
                }
                let failure = Failure::Closed(When::Early(None));
                let reason = failure.to_string();
                let d = diagnose(&Failed {
                    service: sent_to,
                    failure: &failure,
                    reason: &reason,
                    head: &head,
                    requested: "",
                    bytes: 0,
                    ports: Some(&ports),
                });
                assert!(
                    d.rule.contains(&format!("look like a {service} request")),
                    "{sent_to} got {service}'s: {}",
                    d.rule
                );
                let there = match ports[service.index()] {
                    Some(p) => format!(
                        "{service} is on {} port {p}",
                        match service.transport() {
                            Transport::Udp => "UDP",
                            Transport::Tcp => "TCP",
                        }
                    ),
                    None => format!("{service} is on not served on this server"),
                };
                assert!(d.rule.contains(&there), "{}", d.rule);
                assert_eq!(d.section, section(service));
                assert_eq!(d.expected, opening(sent_to));
            }
        }
    }

    #[test]
    fn name_mistakes_are_told_as_name_mistakes() {
        let refused = |name: &str, e| Failure::name(crate::failure::NameOf::File, name, e);
        // The commonest slip: a name read with its newline.
        let d = diagnosed(
            ServiceId::TcpUpload,
            refused("newline.txt\n", NameError::Control(0x0A)),
            b"\0\0\0\0\0\0\0\x05newline.txt\n",
            "newline.txt\n",
        );
        assert!(d.rule.contains("ends in a line break"), "{}", d.rule);
        assert!(d.rule.contains("name.strip()"), "{}", d.rule);
        assert_eq!(d.section, "Rules common to both");
        for service in [ServiceId::Signal, ServiceId::UdpUpload] {
            let d = diagnosed(
                service,
                refused("lab1.py\n", NameError::Control(0x0A)),
                b"",
                "lab1.py\n",
            );
            assert!(
                d.rule.contains("ends in a line break"),
                "{service}: {}",
                d.rule
            );
        }
        let d = diagnosed(
            ServiceId::Signal,
            refused("../x", NameError::DotComponent),
            b"RAF",
            "../x",
        );
        assert!(d.rule.contains("no `..`"), "{}", d.rule);
        let d = diagnosed(
            ServiceId::MagicDownload,
            Failure::Refused(Refusal::RequestedName(NameError::Nul)),
            &[0x49, 0x7E, 1, 0, 2, b'a', 0],
            "a\0",
        );
        assert!(d.rule.contains("NUL"), "{}", d.rule);
    }

    #[test]
    fn every_service_says_what_it_expected() {
        for service in ServiceId::ALL {
            let d = diagnosed(service, Failure::Broken("x".into()), b"", "");
            assert_eq!(d.expected, opening(service));
            assert!(!d.expected.contains("the protocol book describes"));
        }
    }

    #[test]
    fn a_lost_handout_pause_is_told_as_such() {
        let lost = Failure::violation(HandoutError::LostPause(LostPause::Waited));
        let d = diagnosed(ServiceId::Signal, lost, b"SAF", "lab1.pyprint('lab 1')");
        assert_eq!(d.section, "The handout's dialect");
        assert!(d.rule.contains("reached ferry together"), "{}", d.rule);
        assert!(d.rule.contains("Send the file again"), "{}", d.rule);
        let d = diagnosed(
            ServiceId::Signal,
            Failure::violation(Ambiguous::NameOrData),
            b"SAR",
            "",
        );
        assert!(d.rule.contains("inside a SAR"), "{}", d.rule);
    }

    #[test]
    fn a_wrong_magic_number_is_named_with_the_bytes_sent() {
        let d = diagnosed(
            ServiceId::MagicDownload,
            Failure::violation(MagicError::BadMagic(0x7E49)),
            &[0x7E, 0x49, 1, 0, 1, b'a'],
            "",
        );
        assert_eq!(d.sent_hex, "7E 49 01 00 01 61");
        assert_eq!(d.sent_text, "~I...a");
        assert!(
            d.rule
                .contains("starts with 0x7E49, not the magic number 0x497E"),
            "{}",
            d.rule
        );
        assert_eq!(d.section, "magic_download (9004/tcp)");
    }

    #[test]
    fn a_wrong_type_and_a_short_name_are_told_apart() {
        let d = diagnosed(
            ServiceId::MagicDownload,
            Failure::violation(MagicError::BadType(2)),
            &[0x49, 0x7E, 2, 0, 1],
            "",
        );
        assert!(d.rule.contains("type byte is 2"), "{}", d.rule);
        let d = diagnosed(
            ServiceId::MagicDownload,
            Failure::Timeout(Awaited::FileRequest),
            &[0x49, 0x7E, 1, 0, 9, b'a', b'b'],
            "",
        );
        assert!(d.rule.contains("name of 9 bytes and 2 came"), "{}", d.rule);
    }

    #[test]
    fn data_sent_before_go_ahead_is_recognised() {
        let head = b"\0\0\0\0\0\0\0\x05a.txthello";
        let d = diagnosed(
            ServiceId::TcpUpload,
            Failure::Timeout(Awaited::Data),
            head,
            "a.txthello",
        );
        assert!(
            d.rule.contains("No file data came after `go ahead`"),
            "{}",
            d.rule
        );
        assert!(d.rule.contains("\"a.txthello\""), "{}", d.rule);
        let name = "a.txt\u{1}\u{2}";
        let refused = Failure::name(crate::failure::NameOf::File, name, NameError::Control(1));
        let d = diagnosed(ServiceId::TcpUpload, refused, head, name);
        assert!(
            d.rule.contains("without waiting for `go ahead`"),
            "{}",
            d.rule
        );
    }

    #[test]
    fn a_client_that_closes_before_go_ahead_is_told_to_wait() {
        let mut head = 11u64.to_be_bytes().to_vec();
        head.extend_from_slice(b"notes.txthello world");
        let d = diagnosed(
            ServiceId::TcpUpload,
            Failure::Closed(When::BeforeGoAhead),
            &head,
            "",
        );
        assert!(
            d.rule.contains("\"notes.txthello world\" after the size"),
            "{}",
            d.rule
        );
        assert!(d.rule.contains("wait for `go ahead`"), "{}", d.rule);
    }

    #[test]
    fn a_handout_file_without_don_is_recognised() {
        let d = diagnosed(
            ServiceId::Signal,
            Failure::Closed(When::BeforeDon),
            b"SAF",
            "",
        );
        assert!(d.rule.contains("send `DON` alone"), "{}", d.rule);
        assert_eq!(d.section, "The handout's dialect");
    }

    #[test]
    fn a_crc_mismatch_says_how_to_compute_it() {
        let mismatch = UdpUploadError::ChecksumMismatch {
            expected: 1,
            actual: 0x97F6_DB4F,
        };
        let d = diagnosed(
            ServiceId::UdpUpload,
            Failure::violation(mismatch),
            br#"{"checksum": "00000001", "name": "a", "size": 3}"#,
            "",
        );
        assert!(d.rule.contains("zlib.crc32"), "{}", d.rule);
        assert!(d.sent_text.starts_with("{\"checksum\""));
    }

    #[test]
    fn anything_else_gets_the_reason_and_a_section() {
        let refused = Failure::name(crate::failure::NameOf::File, "..", NameError::DotComponent);
        let d = diagnosed(ServiceId::UdpDownload, refused, b"..", "");
        assert_eq!(
            d.rule,
            "\"..\": the name contains a '.' or '..' component. A name is stored inside the server's storage root only: no `..`, no leading `/`, no empty parts."
        );
        assert_eq!(d.section, "Rules common to both");
        let d = diagnosed(
            ServiceId::UdpDownload,
            Failure::Broken("x".into()),
            b"a",
            "a",
        );
        assert_eq!(d.rule, "transfer broken off: x");
        assert_eq!(d.section, "udp_download (9001/udp)");
        let missing = Failure::Storage(StorageError::NotFound("x.txt".into()));
        let d = diagnosed(ServiceId::Signal, missing, b"RAF", "x.txt");
        assert!(d.rule.contains("no file named \"x.txt\""), "{}", d.rule);
    }

    #[test]
    fn the_texts_the_diagnosis_matched_before_are_the_variants_it_matches_now() {
        // The wire and log texts are unchanged by the types behind them.
        let cases: [(Failure, &str); 8] = [
            (Failure::Closed(When::BeforeGoAhead), "the client closed the connection before `go ahead`"),
            (Failure::Closed(When::Early(None)), "the client closed the connection early"),
            (Failure::Timeout(Awaited::Data), "timed out waiting for data"),
            (Failure::Closed(When::BeforeDon), "the client closed the connection before the DON that ends the file"),
            (
                Failure::Refused(Refusal::Quota {
                    files: 3,
                    bytes: ferry_config::Size(1 << 20),
                    window: ferry_config::Dur(std::time::Duration::from_secs(3600)),
                    retry_secs: 5,
                }),
                "your address has reached its upload quota (3 files and 1 MiB per 1h); try again in 5 s",
            ),
            (Failure::Violation(Violation::UnexpectedInFile("RAF")), "unexpected RAF inside a file"),
            (
                Failure::Violation(Violation::OverBufferSize { len: 9000, buffer_size: 1452 }),
                "a datagram of 9000 bytes is larger than the buffer size 1452",
            ),
            (
                Failure::Refused(Refusal::BudgetSpent {
                    per: ferry_config::Size(100_000),
                    window: ferry_config::Dur(std::time::Duration::from_secs(600)),
                    retry_secs: 61,
                }),
                "your address has used its download budget (100000 B per 10m); try again in 61 s",
            ),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text);
        }
    }
}
