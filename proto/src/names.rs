//! The one name normaliser every service uses.
//!
//! Names from the wire are untrusted. They become a [`SafeName`] (one path
//! component) or a [`RelPath`] (normal components under the storage root) only
//! through the functions here, so storage code cannot be handed a raw client
//! string. Paths are confined by components, never by substring checks: a
//! component is accepted only if it is a plain name, not empty, `.` or `..`.
//!
//! Both `/` and `\` separate components (students on Windows send
//! `files\report.pdf`). Names are stored byte for byte: there is no Unicode
//! normalisation and no percent-decoding, so `%2e%2e` is a file called `%2e%2e`
//! and two names that differ only in normalisation are two files.
//!
//! What this module cannot see (symlinks placed inside the root by an admin) is
//! checked by the daemon's storage when it opens a path.

use std::fmt;

/// Longest component accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Default longest path accepted, in bytes: 1024, the magic protocol's own limit.
pub const DEFAULT_MAX_PATH_LEN: usize = 1024;

/// Components starting with this are reserved for the daemon's work area.
pub const RESERVED_PREFIX: &str = ".ferry";

/// Why a name was refused. The text is sent to the client as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing left once separators are removed.
    #[error("the name is empty")]
    Empty,
    /// A NUL byte, which no file system name can hold.
    #[error("the name contains a NUL byte")]
    Nul,
    /// A control character (including ESC, so no terminal escapes reach logs or listings).
    #[error("the name contains control character U+{0:04X}")]
    Control(u32),
    /// A `.` or `..` component.
    #[error("the name contains a '.' or '..' component")]
    DotComponent,
    /// An empty component (`a//b`) in a path that must name normal components only.
    #[error("the path contains an empty component")]
    EmptyComponent,
    /// A path starting at the file system root.
    #[error("absolute paths are not allowed")]
    Absolute,
    /// The whole path is longer than allowed.
    #[error("the name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// One component is longer than [`MAX_COMPONENT_LEN`].
    #[error("a path component is {0} bytes long, the limit is 255")]
    ComponentTooLong(usize),
    /// A component naming the daemon's work area.
    #[error("names starting with '.ferry' are reserved")]
    Reserved,
    /// Not UTF-8.
    #[error("the name is not valid UTF-8")]
    NotUtf8,
}

/// A single, plain file-name component: no separators, not `.` or `..`, no
/// control characters, 1..=255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafeName(String);

impl SafeName {
    /// The name an upload is stored under: the last component of what the
    /// client sent (seed 002: "the name is whatever the student typed on the
    /// command line, directories included").
    pub fn for_upload(raw: &str) -> Result<SafeName, NameError> {
        check_chars(raw, DEFAULT_MAX_PATH_LEN)?;
        let last = raw
            .split(is_separator)
            .rfind(|c| !c.is_empty())
            .ok_or(NameError::Empty)?;
        Self::component(last)
    }

    /// Like [`SafeName::for_upload`], from raw wire bytes.
    pub fn for_upload_bytes(raw: &[u8]) -> Result<SafeName, NameError> {
        Self::for_upload(std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?)
    }

    /// Exactly one component, as given.
    pub fn component(raw: &str) -> Result<SafeName, NameError> {
        check_chars(raw, usize::MAX)?;
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.contains(is_separator) {
            return Err(NameError::EmptyComponent);
        }
        if raw == "." || raw == ".." {
            return Err(NameError::DotComponent);
        }
        if raw.len() > MAX_COMPONENT_LEN {
            return Err(NameError::ComponentTooLong(raw.len()));
        }
        if is_reserved(raw) {
            return Err(NameError::Reserved);
        }
        Ok(SafeName(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relative path of one or more [`SafeName`] components, always below the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<SafeName>);

impl RelPath {
    /// Parses a download or directory-entry path: normal components only.
    ///
    /// Trailing separators are ignored (`dir/` names `dir`); a leading one
    /// (absolute path), an empty, `.` or `..` component, is refused.
    pub fn parse(raw: &str, max_len: usize) -> Result<RelPath, NameError> {
        check_chars(raw, max_len)?;
        if raw.starts_with(is_separator) {
            return Err(NameError::Absolute);
        }
        let trimmed = raw.trim_end_matches(is_separator);
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        let mut parts = Vec::new();
        for part in trimmed.split(is_separator) {
            if part.is_empty() {
                return Err(NameError::EmptyComponent);
            }
            parts.push(SafeName::component(part)?);
        }
        Ok(RelPath(parts))
    }

    /// Like [`RelPath::parse`], from raw wire bytes.
    pub fn parse_bytes(raw: &[u8], max_len: usize) -> Result<RelPath, NameError> {
        Self::parse(
            std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?,
            max_len,
        )
    }

    /// A one-component path.
    pub fn from_name(name: SafeName) -> RelPath {
        RelPath(vec![name])
    }

    /// This path with one more component.
    pub fn join(&self, name: SafeName) -> RelPath {
        let mut parts = self.0.clone();
        parts.push(name);
        RelPath(parts)
    }

    /// The components, first to last (never empty).
    pub fn components(&self) -> &[SafeName] {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &SafeName {
        // Invariant: every constructor builds at least one component.
        &self.0[self.0.len() - 1]
    }

    /// The components joined with `/`.
    pub fn to_slash_string(&self) -> String {
        let parts: Vec<&str> = self.0.iter().map(SafeName::as_str).collect();
        parts.join("/")
    }

    /// The path as a relative [`std::path::PathBuf`] (built component by component).
    pub fn to_path_buf(&self) -> std::path::PathBuf {
        self.0.iter().map(SafeName::as_str).collect()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_slash_string())
    }
}

fn is_separator(c: char) -> bool {
    c == '/' || c == '\\'
}

/// True for a component a file system could take for one starting with
/// [`RESERVED_PREFIX`]: compared after compatibility normalisation (NFKC:
/// full-width `．ｆｅｒｒｙ`, composed and decomposed forms), case folding
/// (`.FERRY-WORK` on an SMB share, exFAT or ext4 casefold), and with the
/// invisible code points some file systems ignore removed (zero-width and
/// bidirectional marks, soft hyphen, variation selectors, BOM).
pub fn is_reserved(component: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    let ignorable = |c: &char| {
        matches!(*c as u32,
            0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
            | 0xFEFF | 0xFFA0 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
    };
    let folded: String = component
        .nfkc()
        .filter(|c| !ignorable(c))
        .flat_map(char::to_lowercase)
        .nfkc()
        .collect();
    folded.starts_with(RESERVED_PREFIX)
}

fn check_chars(raw: &str, max_len: usize) -> Result<(), NameError> {
    if raw.len() > max_len {
        return Err(NameError::TooLong {
            len: raw.len(),
            max: max_len,
        });
    }
    for c in raw.chars() {
        if c == '\0' {
            return Err(NameError::Nul);
        }
        if c.is_control() {
            return Err(NameError::Control(c as u32));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_whatever_the_case_or_form() {
        for raw in [
            ".ferry-work",
            ".FERRY-WORK",
            ".Ferry-Work",
            ".fErRy",
            ".ferryrc",
            "\u{FF0E}\u{FF46}\u{FF45}\u{FF52}\u{FF52}\u{FF59}-work",
            ".fe\u{200B}rry-work",
            ".\u{00AD}ferry",
            ".FE\u{0052}\u{0052}Y",
            ".\u{FEFF}ferry-lock",
        ] {
            assert!(is_reserved(raw), "{raw:?}");
            assert_eq!(
                SafeName::component(raw),
                Err(NameError::Reserved),
                "{raw:?}"
            );
            assert_eq!(
                RelPath::parse(&format!("x/{raw}/y"), 1024),
                Err(NameError::Reserved),
                "{raw:?}"
            );
        }
        for raw in ["ferry", ".ferr", "a.ferry", "..ferry", ".fer ry", ".férry"] {
            assert!(!is_reserved(raw), "{raw:?}");
        }
    }

    #[test]
    fn upload_names_keep_the_last_component() {
        for (raw, want) in [
            ("report.pdf", "report.pdf"),
            ("files/report.pdf", "report.pdf"),
            ("/home/s/report.pdf", "report.pdf"),
            ("C:\\Users\\s\\report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("dir/", "dir"),
            ("....//", "...."),
            ("...", "..."),
            ("%2e%2e", "%2e%2e"),
            ("naïve café.txt", "naïve café.txt"),
        ] {
            assert_eq!(SafeName::for_upload(raw).unwrap().as_str(), want, "{raw:?}");
        }
    }

    #[test]
    fn upload_names_refused() {
        let long = "a".repeat(256);
        for (raw, err) in [
            ("", NameError::Empty),
            ("/", NameError::Empty),
            ("..", NameError::DotComponent),
            ("a/..", NameError::DotComponent),
            (".", NameError::DotComponent),
            ("a\0b", NameError::Nul),
            ("a\nb", NameError::Control(0x0A)),
            ("\u{1b}[31mred", NameError::Control(0x1B)),
            ("\u{7f}", NameError::Control(0x7F)),
            (long.as_str(), NameError::ComponentTooLong(256)),
            (".ferry-work", NameError::Reserved),
        ] {
            assert_eq!(SafeName::for_upload(raw), Err(err), "{raw:?}");
        }
        assert_eq!(
            SafeName::for_upload(&"a/".repeat(600)),
            Err(NameError::TooLong {
                len: 1200,
                max: 1024
            })
        );
        assert_eq!(
            SafeName::for_upload_bytes(b"\xff\xfe"),
            Err(NameError::NotUtf8)
        );
    }

    #[test]
    fn relative_paths() {
        let p = RelPath::parse("a/b\\c.txt", 1024).unwrap();
        assert_eq!(p.to_slash_string(), "a/b/c.txt");
        assert_eq!(p.file_name().as_str(), "c.txt");
        assert_eq!(
            RelPath::parse("dir/", 1024).unwrap().to_slash_string(),
            "dir"
        );
        for (raw, err) in [
            ("/etc/passwd", NameError::Absolute),
            ("\\x", NameError::Absolute),
            ("a/../b", NameError::DotComponent),
            ("./a", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("", NameError::Empty),
            ("a/.ferry-work/x", NameError::Reserved),
            ("a\u{0}", NameError::Nul),
        ] {
            assert_eq!(RelPath::parse(raw, 1024), Err(err), "{raw:?}");
        }
        assert!(matches!(
            RelPath::parse("abcdef", 5),
            Err(NameError::TooLong { len: 6, max: 5 })
        ));
    }

    #[test]
    fn path_buf_has_only_normal_components() {
        use std::path::Component;
        let p = RelPath::parse("x/y/z", 1024).unwrap().to_path_buf();
        assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
        assert_eq!(p.components().count(), 3);
    }
}
