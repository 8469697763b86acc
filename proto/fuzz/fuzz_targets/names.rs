//! Fuzzes the name normaliser: whatever it accepts stays below the root.
#![no_main]

use std::path::{Component, Path};

use ferry_proto::names::{RelPath, SafeName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|d: &[u8]| {
    if let Ok(p) = RelPath::parse_bytes(d, 1024) {
        let rel = p.to_path_buf();
        assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
        assert!(Path::new("/root").join(&rel).starts_with("/root"));
        assert!(!p.to_slash_string().contains('\0'));
    }
    if let Ok(n) = SafeName::for_upload_bytes(d) {
        let s = n.as_str();
        assert!(!s.is_empty() && s != "." && s != "..");
        assert!(!s.contains(['/', '\\', '\0']) && !s.chars().any(char::is_control));
        assert!(s.len() <= 255);
    }
});
