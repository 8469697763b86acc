//! Bytes from the wire shown to a person: as hex pairs and as text, the
//! way the lab page's diagnosis and `ferry check`'s evidence both show
//! what a peer sent.

/// Bytes as spaced hex pairs: `49 7E 01`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes as text: printable ASCII kept, anything else a `.`.
pub fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_as_hex_and_as_text() {
        assert_eq!(hex(&[0x49, 0x7E, 1]), "49 7E 01");
        assert_eq!(hex(&[]), "");
        assert_eq!(printable(b"SAF\0a\xffz"), "SAF.a.z");
    }
}
