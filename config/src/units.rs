//! Human units in the file: durations (`"250ms"`, `"10s"`, `"2m"`) and sizes
//! (`4096`, `"64 KiB"`, `"4 GiB"`, `"10MB"`), and IP networks (`"10.0.0.0/8"`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a duration, a size or a network in the file (or on a command line)
/// was refused; the text says what would have been right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    /// A bare number where a duration belongs.
    #[error("{input:?} has no unit; write e.g. \"{digits}s\" or \"{digits}ms\"")]
    NoUnit {
        /// As written.
        input: String,
        /// The number, trimmed.
        digits: String,
    },
    /// Not humantime's grammar.
    #[error("{input:?} is not a duration like \"10s\" or \"250ms\" ({why})")]
    NotADuration {
        /// As written.
        input: String,
        /// humantime's reason.
        why: humantime::DurationError,
    },
    /// No number at the start of a size.
    #[error("{0:?} is not a size like \"64 KiB\"")]
    NotASize(String),
    /// A size unit that is not one of the eight.
    #[error(
        "unknown size unit {0:?} (use B, K, M, G, T (powers of 1024) or KB, MB, GB, TB (of 1000))"
    )]
    UnknownSizeUnit(String),
    /// A size over 2^64 - 1 bytes.
    #[error("{0:?} is too large")]
    TooLarge(String),
    /// A zero duration where a wait must have a length.
    #[error("{0:?} must be longer than 0")]
    Zero(String),
    /// Not a CIDR network.
    #[error("{0:?} is not a network like \"10.0.0.0/8\" or \"fc00::/7\"")]
    NotANetwork(String),
}

/// A duration written as numbers with units: `ms`, `s`, `m` (or `min`),
/// `h`, and compounds such as `1m 30s` (humantime's grammar, exact and
/// overflow-checked). A bare number is refused: `10` could be anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UnitError::NoUnit {
                input: s.to_owned(),
                digits: t.to_owned(),
            });
        }
        humantime::parse_duration(t)
            .map(Dur)
            .map_err(|why| UnitError::NotADuration {
                input: s.to_owned(),
                why,
            })
    }
}

impl fmt::Display for Dur {
    /// In the largest units that say it exactly, as the docs write them:
    /// `10s`, `1h`, `180days`, `1s 500ms` (each parses back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() % 1_000_000 != 0 {
            // Finer than a millisecond: humantime's own words.
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        // Days and no larger: a month or a year has no exact length.
        let mut parts = Vec::new();
        for (unit, len) in [
            ("days", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= len {
                let n = ms / len;
                let unit = if unit == "days" && n == 1 {
                    "day"
                } else {
                    unit
                };
                parts.push(format!("{n}{unit}"));
                ms %= len;
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// A size or a duration as the file writes it: a bare integer, or text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d) {
            // `shutdown_grace = 10`: a number without its unit.
            Ok(Raw::Int(n)) => Err(de::Error::custom(UnitError::NoUnit {
                input: n.to_string(),
                digits: n.to_string(),
            })),
            Ok(Raw::Text(s)) => s.parse().map_err(de::Error::custom),
            Err(_) => Err(de::Error::custom(
                "expected a duration: a string with a unit, like \"10s\" or \"250ms\"",
            )),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size in bytes: an integer, or a string with a unit: `K` `M` `G` `T`
/// and `KiB` `MiB` `GiB` `TiB` are powers of 1024, `KB` `MB` `GB` `TB` of
/// 1000. The same grammar in the file and on `ferry`'s command line.
///
/// Parsed here rather than with the `bytesize` crate, which goes through
/// `f64` (inexact above 2^53, fractions of a byte accepted, overflow
/// saturated instead of refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| UnitError::NotASize(s.to_owned()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "k" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => return Err(UnitError::UnknownSizeUnit(other.to_owned())),
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| UnitError::TooLarge(s.to_owned()))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= mult && self.0 % mult == 0 {
                return write!(f, "{} {unit}", self.0 / mult);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d) {
            Ok(Raw::Int(n)) => Ok(Size(n)),
            Ok(Raw::Text(s)) => s.parse().map_err(de::Error::custom),
            Err(_) => Err(de::Error::custom(
                "expected a size: a non-negative integer of bytes or a string like \"64 KiB\"",
            )),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An IP network in CIDR form, `10.0.0.0/8` or `fc00::/7` (the `ipnet` crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, as seen on a dual-stack socket) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl FromStr for IpNet {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        s.trim()
            .parse::<ipnet::IpNet>()
            .map(IpNet)
            .map_err(|_| UnitError::NotANetwork(s.to_owned()))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("250ms".parse::<Dur>(), Ok(Dur(Duration::from_millis(250))));
        assert_eq!("10s".parse::<Dur>(), Ok(Dur(Duration::from_secs(10))));
        assert_eq!("2m".parse::<Dur>(), Ok(Dur(Duration::from_secs(120))));
        assert_eq!("1h".parse::<Dur>(), Ok(Dur(Duration::from_secs(3600))));
        assert!("10".parse::<Dur>().is_err());
        assert!("ten s".parse::<Dur>().is_err());
        assert_eq!(
            "2 days".parse::<Dur>(),
            Ok(Dur(Duration::from_secs(2 * 86_400)))
        );
        assert!("5 fortnights".parse::<Dur>().is_err());
        assert_eq!("1m 30s".parse::<Dur>(), Ok(Dur(Duration::from_secs(90))));
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1s 500ms");
        assert_eq!(Dur(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(Dur(Duration::from_secs(3600)).to_string(), "1h");
        assert_eq!(
            Dur(Duration::from_secs(180 * 86_400)).to_string(),
            "180days"
        );
        assert_eq!(
            Dur(Duration::from_secs(86_400 + 90)).to_string(),
            "1day 1m 30s"
        );
        for d in [
            1500,
            30_000,
            3_600_000,
            90_000,
            86_400_000,
            180 * 86_400_000,
        ] {
            let d = Dur(Duration::from_millis(d));
            assert_eq!(d.to_string().parse::<Dur>(), Ok(d), "{d}");
        }
        let e = "10".parse::<Dur>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10\" has no unit; write e.g. \"10s\" or \"10ms\""
        );
    }

    #[test]
    fn sizes() {
        assert_eq!("4096".parse::<Size>(), Ok(Size(4096)));
        assert_eq!("64 KiB".parse::<Size>(), Ok(Size(65536)));
        assert_eq!("4GiB".parse::<Size>(), Ok(Size(4 << 30)));
        assert_eq!("10 MB".parse::<Size>(), Ok(Size(10_000_000)));
        assert_eq!("64K".parse::<Size>(), Ok(Size(65536)));
        assert_eq!("12M".parse::<Size>(), Ok(Size(12 << 20)));
        assert_eq!("1G".parse::<Size>(), Ok(Size(1 << 30)));
        assert!("99999999999 TiB".parse::<Size>().is_err());
        assert!("-1".parse::<Size>().is_err());
        assert!("1 PB".parse::<Size>().is_err());
        assert_eq!(Size(4 << 30).to_string(), "4 GiB");
        assert_eq!(Size(1000).to_string(), "1000 B");
    }

    #[test]
    fn networks() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "fc00::/7".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0.0".parse::<IpNet>().is_err());
    }
}
