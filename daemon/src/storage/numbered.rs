//! The numbered names of `on_conflict = "rename"` (`report (3).pdf`),
//! shared by every backend.

/// `report.pdf` → `report (3).pdf`; `archive.tar.gz` → `archive (3).tar.gz`;
/// `.bashrc` → `.bashrc (3)`; `Makefile` → `Makefile (3)`.
/// The stem is shortened if needed so the result still fits in 255 bytes.
pub(crate) fn numbered(name: &str, n: u32) -> String {
    let stem_end = match name.find('.') {
        Some(0) | None => name.len(),
        Some(i) => i,
    };
    let (stem, ext) = name.split_at(stem_end);
    let suffix = format!(" ({n})");
    let room = ferry_proto::names::MAX_COMPONENT_LEN.saturating_sub(suffix.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = format!("{}{suffix}{ext}", &stem[..cut]);
    // An extension alone too long to keep: shorten the whole name instead.
    if out.len() > ferry_proto::names::MAX_COMPONENT_LEN {
        let mut cut = ferry_proto::names::MAX_COMPONENT_LEN - suffix.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}{suffix}", &name[..cut]);
    }
    out
}

/// `k` when `entry` is [`numbered`]`(name, k)`, the stem shortened or not.
pub(crate) fn number_of(name: &str, entry: &str) -> Option<u32> {
    let open = entry.rfind(" (")?;
    let digits = &entry[open + 2..];
    let close = digits.find(')')?;
    let k = digits[..close].parse::<u32>().ok()?;
    (numbered(name, k) == entry).then_some(k)
}

/// A prefix every numbered name of `name` starts with (its stem, or as much
/// of it as the longest numbered name keeps): where to search for them.
pub(crate) fn stem(name: &str) -> &str {
    let stem_end = match name.find('.') {
        Some(0) | None => name.len(),
        Some(i) => i,
    };
    let longest_suffix = " (4294967295)".len();
    let room = ferry_proto::names::MAX_COMPONENT_LEN
        .saturating_sub(longest_suffix + (name.len() - stem_end));
    let mut cut = stem_end.min(room);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    &name[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbered_name_gives_its_number_back() {
        for name in ["report.pdf", ".bashrc", "Makefile", "archive.tar.gz"] {
            for k in [1, 7, 1000] {
                let entry = numbered(name, k);
                assert_eq!(number_of(name, &entry), Some(k), "{entry}");
                assert!(entry.starts_with(stem(name)), "{entry}");
            }
            assert_eq!(number_of(name, name), None);
        }
        assert_eq!(number_of("report.pdf", "report (x).pdf"), None);
        assert_eq!(number_of("report.pdf", "report (01).pdf"), None);
        // A stem shortened to fit 255 bytes still gives its number back.
        let long = format!("{}.txt", "s".repeat(250));
        let entry = numbered(&long, 12);
        assert!(entry.len() <= 255);
        assert_eq!(number_of(&long, &entry), Some(12));
        assert!(entry.starts_with(stem(&long)));
    }
}
