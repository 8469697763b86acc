//! CRC-32/IEEE (the `binascii.crc32` of the lab handouts), fed chunk by chunk.

/// An incremental CRC-32/IEEE: feed it the bytes of a transfer as they arrive.
///
/// The result equals Python's `binascii.crc32(data) & 0xFFFFFFFF` over the
/// concatenation of every chunk given to [`Crc32::update`].
#[derive(Clone, Default)]
pub struct Crc32 {
    hasher: crc32fast::Hasher,
}

impl Crc32 {
    /// A fresh state, as for zero bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk of the data.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
    }

    /// The CRC of every byte given so far (the state stays usable).
    pub fn value(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

impl std::fmt::Debug for Crc32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc32({})", format_hex(self.value()))
    }
}

/// The CRC-32 of one buffer.
pub fn checksum(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The lab's text form of a checksum: `"%08X" % crc`, eight upper-case hex digits.
pub fn format_hex(crc: u32) -> String {
    format!("{crc:08X}")
}

/// Parses eight hex digits (either case; the lab writes upper case) into a CRC.
///
/// Anything else (fewer or more digits, a sign, a `0x` prefix, spaces) is `None`.
pub fn parse_hex(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_binascii() {
        // python3 -c 'import binascii; print("%08X" % (binascii.crc32(b"hello world") & 0xFFFFFFFF))'
        assert_eq!(format_hex(checksum(b"hello world")), "0D4A1185");
        assert_eq!(format_hex(checksum(b"")), "00000000");
    }

    #[test]
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut crc = Crc32::new();
        for chunk in data.chunks(333) {
            crc.update(chunk);
        }
        assert_eq!(crc.value(), checksum(&data));
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("97F6DB4F"), Some(0x97F6_DB4F));
        assert_eq!(parse_hex("97f6db4f"), Some(0x97F6_DB4F));
        for bad in [
            "",
            "97F6DB4",
            "97F6DB4F0",
            "+7F6DB4F",
            "0x97F6DB",
            "97F6 DB4",
            "GGGGGGGG",
        ] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
    }
}
