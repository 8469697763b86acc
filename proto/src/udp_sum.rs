//! `udp_sum` (seed 001 §3, "Adding two numbers"): a client name and an
//! integer in 1..=100; the server answers with its own name and integer.
//!
//! The lab fixes no layout, so the request is parsed leniently (seed README:
//! "students use `name:number`, `name,number`, `name;number`, two datagrams,
//! or JSON"):
//!
//! | request                           | reply (server name `Server of ferry`, number 42) |
//! |-----------------------------------|--------------------------------------------------|
//! | `Client of Ann:7` (also `,` `;` `\|` `\n`, or a space) | `Server of ferry:42` (the same separator)  |
//! | `{"name": "Client of Ann", "number": 7}` | `{"name": "Server of ferry", "number": 42}` |
//! | `["Client of Ann", 7]`            | `["Server of ferry", 42]`                        |
//! | `Client of Ann`, then `7`         | `Server of ferry`, then `42` (two datagrams)     |
//! | out of range or unparsable        | `ERROR: <reason>`                                |
//!
//! The reply mirrors the request's layout, so whatever split a student wrote
//! for sending also reads the answer. The lab server "should terminate" on an
//! out-of-range number; ferry answers with an error and keeps serving.

use serde_json::Value;

/// Smallest number accepted ("an integer between 1 and 100").
pub const MIN: i64 = 1;
/// Largest number accepted.
pub const MAX: i64 = 100;
/// Default cap on a request datagram, in bytes.
pub const DEFAULT_MAX_REQUEST_LEN: usize = 1024;
/// Longest client name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// How the request was laid out; the reply uses the same layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `name<sep>number` with this separator byte (`:` `,` `;` `|` or `\n`).
    Separated(u8),
    /// A JSON object `{"name": …, "number": …}`.
    JsonObject,
    /// A JSON array `[name, number]`.
    JsonArray,
    /// The name and the number in two datagrams.
    TwoDatagrams,
}

/// One parsed request datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SumRequest {
    /// Name and number together.
    Full {
        /// The client's name.
        name: String,
        /// The client's number (not yet range-checked).
        number: i64,
        /// How it was laid out.
        layout: Layout,
    },
    /// Only a name: the number should follow in the next datagram.
    NameOnly(String),
    /// Only a number: it completes a name sent just before.
    NumberOnly(i64),
}

/// Why a sum request was refused. The text goes back as `ERROR: <text>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SumError {
    /// Longer than the cap.
    #[error("request is {len} bytes, the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not UTF-8.
    #[error("request is not valid UTF-8")]
    NotUtf8,
    /// Nothing recognisable as a name and an integer.
    #[error("could not read a name and an integer from {0:?}; send e.g. \"Client of Ann:42\"")]
    Unparsable(String),
    /// The name part is empty.
    #[error("the client name is empty")]
    EmptyName,
    /// The name part is too long.
    #[error("the client name is {0} bytes, the limit is 256")]
    NameTooLong(usize),
    /// The number is not in 1..=100.
    #[error("{0} is out of range: the number must be an integer from 1 to 100")]
    OutOfRange(String),
}

const SEPARATORS: &[u8] = b"\n|;,:";

/// Parses a request datagram.
pub fn parse_request(datagram: &[u8], max_len: usize) -> Result<SumRequest, SumError> {
    if datagram.len() > max_len {
        return Err(SumError::TooLong {
            len: datagram.len(),
            max: max_len,
        });
    }
    let text = std::str::from_utf8(datagram).map_err(|_| SumError::NotUtf8)?;
    let text = text.trim();
    if text.starts_with('{') || text.starts_with('[') {
        return parse_json(text);
    }
    let split = text
        .bytes()
        .enumerate()
        .rfind(|(_, b)| SEPARATORS.contains(b));
    match split {
        Some((at, sep)) => {
            let name = checked_name(&text[..at])?;
            let number = parse_number(&text[at + 1..])?;
            Ok(SumRequest::Full {
                name,
                number,
                layout: Layout::Separated(sep),
            })
        }
        None if text.is_empty() => Err(SumError::Unparsable(String::new())),
        None => match parse_number(text) {
            Ok(n) => Ok(SumRequest::NumberOnly(n)),
            Err(SumError::OutOfRange(n)) => Err(SumError::OutOfRange(n)),
            // "Client of Ann 7": a space before a trailing integer separates them.
            Err(_) => match text
                .rsplit_once(' ')
                .map(|(name, n)| (name, parse_number(n)))
            {
                Some((name, Ok(number))) => Ok(SumRequest::Full {
                    name: checked_name(name)?,
                    number,
                    layout: Layout::Separated(b' '),
                }),
                Some((_, Err(SumError::OutOfRange(n)))) => Err(SumError::OutOfRange(n)),
                _ => Ok(SumRequest::NameOnly(checked_name(text)?)),
            },
        },
    }
}

fn checked_name(raw: &str) -> Result<String, SumError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(SumError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SumError::NameTooLong(name.len()));
    }
    Ok(name.to_owned())
}

/// An integer: optional sign and decimal digits. Digits too large for `i64`
/// are out of range, not unparsable.
fn parse_number(raw: &str) -> Result<i64, SumError> {
    let t = raw.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SumError::Unparsable(t.chars().take(64).collect()));
    }
    t.parse::<i64>()
        .map_err(|_| SumError::OutOfRange(t.chars().take(32).collect()))
}

fn parse_json(text: &str) -> Result<SumRequest, SumError> {
    let unparsable = || SumError::Unparsable(text.chars().take(64).collect());
    let value: Value = serde_json::from_str(text).map_err(|_| unparsable())?;
    let (name, number, layout) = match &value {
        Value::Object(map) => {
            let name = ["name", "client", "client_name", "clientName"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str))
                .or_else(|| single(map.values().filter_map(Value::as_str)));
            let number = ["number", "num", "n", "value", "integer", "int"]
                .iter()
                .find_map(|k| map.get(*k).filter(|v| v.is_number()))
                .or_else(|| single(map.values().filter(|v| v.is_number())));
            (name, number, Layout::JsonObject)
        }
        Value::Array(items) if items.len() == 2 => {
            (items[0].as_str(), Some(&items[1]), Layout::JsonArray)
        }
        _ => (None, None, Layout::JsonObject),
    };
    let (name, number) = name.zip(number).ok_or_else(unparsable)?;
    let number = match number {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i,
            // 7.0 is the integer 7; 7.5 is not an integer.
            None if n
                .as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e15) =>
            {
                n.as_f64().unwrap_or_default() as i64
            }
            None if n.as_f64().is_some_and(|f| f.fract() != 0.0) => return Err(unparsable()),
            None => return Err(SumError::OutOfRange(n.to_string())),
        },
        _ => return Err(unparsable()),
    };
    Ok(SumRequest::Full {
        name: checked_name(name)?,
        number,
        layout,
    })
}

fn single<T>(mut it: impl Iterator<Item = T>) -> Option<T> {
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// Checks the lab's range, 1..=100.
pub fn check_range(number: i64) -> Result<i64, SumError> {
    if (MIN..=MAX).contains(&number) {
        Ok(number)
    } else {
        Err(SumError::OutOfRange(number.to_string()))
    }
}

/// The reply datagrams (one, or two for [`Layout::TwoDatagrams`]).
pub fn encode_reply(server_name: &str, number: i64, layout: Layout) -> Vec<Vec<u8>> {
    let json_name = Value::String(server_name.to_owned()).to_string();
    match layout {
        Layout::Separated(sep) => {
            let mut out = server_name.as_bytes().to_vec();
            out.push(sep);
            out.extend_from_slice(number.to_string().as_bytes());
            vec![out]
        }
        Layout::JsonObject => {
            vec![format!("{{\"name\": {json_name}, \"number\": {number}}}").into_bytes()]
        }
        Layout::JsonArray => vec![format!("[{json_name}, {number}]").into_bytes()],
        Layout::TwoDatagrams => vec![
            server_name.as_bytes().to_vec(),
            number.to_string().into_bytes(),
        ],
    }
}

/// An error reply: `ERROR: <reason>`.
pub fn encode_error(error: &SumError) -> Vec<u8> {
    crate::udp_upload::encode_error(&error.to_string())
}

/// Encodes a request in a layout (client side).
pub fn encode_request(name: &str, number: i64, layout: Layout) -> Vec<Vec<u8>> {
    encode_reply(name, number, layout)
}

/// Parses a one-datagram reply (client side) into the server's name and number.
pub fn parse_reply(datagram: &[u8]) -> Result<(String, i64), SumError> {
    if let Some(reason) = datagram.strip_prefix(b"ERROR: ") {
        return Err(SumError::Unparsable(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    match parse_request(datagram, super::udp_upload::MAX_DATAGRAM)? {
        SumRequest::Full { name, number, .. } => Ok((name, number)),
        _ => Err(SumError::Unparsable(
            String::from_utf8_lossy(datagram).chars().take(64).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(name: &str, number: i64, layout: Layout) -> SumRequest {
        SumRequest::Full {
            name: name.into(),
            number,
            layout,
        }
    }

    #[test]
    fn lenient_layouts() {
        for (raw, want) in [
            (
                "Client of Ann:7",
                full("Client of Ann", 7, Layout::Separated(b':')),
            ),
            (
                "Client of Ann, 7",
                full("Client of Ann", 7, Layout::Separated(b',')),
            ),
            (
                "Client of Ann;7\n",
                full("Client of Ann", 7, Layout::Separated(b';')),
            ),
            (
                "Client of Ann|+7",
                full("Client of Ann", 7, Layout::Separated(b'|')),
            ),
            (
                "Client of Ann\n7",
                full("Client of Ann", 7, Layout::Separated(b'\n')),
            ),
            (
                "Smith, Ann: 7",
                full("Smith, Ann", 7, Layout::Separated(b':')),
            ),
            (
                r#"{"name": "Ann", "number": 7}"#,
                full("Ann", 7, Layout::JsonObject),
            ),
            (
                r#"{"number":7,"client":"Ann"}"#,
                full("Ann", 7, Layout::JsonObject),
            ),
            (r#"{"who":"Ann","x":7}"#, full("Ann", 7, Layout::JsonObject)),
            (r#"["Ann", 7]"#, full("Ann", 7, Layout::JsonArray)),
            (
                "Client of Ann",
                SumRequest::NameOnly("Client of Ann".into()),
            ),
            (" 42 ", SumRequest::NumberOnly(42)),
            ("Ann:500", full("Ann", 500, Layout::Separated(b':'))),
        ] {
            assert_eq!(parse_request(raw.as_bytes(), 1024), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_request(b":7", 1024), Err(SumError::EmptyName));
        assert!(matches!(
            parse_request(b"Ann:seven", 1024),
            Err(SumError::Unparsable(_))
        ));
        assert!(matches!(
            parse_request(b"Ann:4.5", 1024),
            Err(SumError::Unparsable(_))
        ));
        assert!(matches!(
            parse_request(b"", 1024),
            Err(SumError::Unparsable(_))
        ));
        assert!(matches!(
            parse_request(b"{\"name\":1}", 1024),
            Err(SumError::Unparsable(_))
        ));
        assert!(matches!(
            parse_request(br#"{"name":"a","number":4.5}"#, 1024),
            Err(SumError::Unparsable(_))
        ));
        assert_eq!(
            parse_request(b"Ann:99999999999999999999", 1024),
            Err(SumError::OutOfRange("99999999999999999999".into()))
        );
        assert_eq!(
            parse_request(br#"{"name":"a","number":1e30}"#, 1024),
            Err(SumError::OutOfRange("1e+30".into()))
        );
        assert_eq!(parse_request(b"\xff:1", 1024), Err(SumError::NotUtf8));
        assert_eq!(
            parse_request(b"abc", 2),
            Err(SumError::TooLong { len: 3, max: 2 })
        );
        assert_eq!(
            parse_request(&[b'a'; 300], 1024),
            Err(SumError::NameTooLong(300))
        );
        assert_eq!(check_range(0), Err(SumError::OutOfRange("0".into())));
        assert_eq!(check_range(101), Err(SumError::OutOfRange("101".into())));
        assert_eq!(check_range(1), Ok(1));
        assert_eq!(check_range(100), Ok(100));
        assert_eq!(
            encode_error(&SumError::OutOfRange("101".into())),
            b"ERROR: 101 is out of range: the number must be an integer from 1 to 100"
        );
    }

    #[test]
    fn replies_mirror_the_request() {
        let s = "Server of ferry";
        assert_eq!(
            encode_reply(s, 42, Layout::Separated(b':')),
            vec![b"Server of ferry:42".to_vec()]
        );
        assert_eq!(
            encode_reply(s, 42, Layout::JsonObject),
            vec![br#"{"name": "Server of ferry", "number": 42}"#.to_vec()]
        );
        assert_eq!(
            encode_reply(s, 42, Layout::JsonArray),
            vec![br#"["Server of ferry", 42]"#.to_vec()]
        );
        assert_eq!(
            encode_reply(s, 42, Layout::TwoDatagrams),
            vec![b"Server of ferry".to_vec(), b"42".to_vec()]
        );
        for layout in [
            Layout::Separated(b';'),
            Layout::JsonObject,
            Layout::JsonArray,
        ] {
            let reply = &encode_reply(s, 42, layout)[0];
            assert_eq!(parse_reply(reply), Ok((s.to_owned(), 42)));
            assert_eq!(parse_request(reply, 1024), Ok(full(s, 42, layout)));
        }
    }
}
