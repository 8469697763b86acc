//! Property tests: every decoder on arbitrary bytes, split arbitrarily, never
//! panics and never grows its buffer past the input plus its largest header;
//! every encoder round-trips.

use bytes::BytesMut;
use ferry_proto::{magic, names, signal, tcp_upload, udp_download, udp_sum, udp_upload};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

/// Feeds `wire` in pieces cut at `cuts`; stops at the first error. Returns the
/// largest buffer capacity seen.
fn feed<D: Decoder>(mut codec: D, wire: &[u8], cuts: &[usize]) -> usize {
    let mut buf = BytesMut::new();
    let mut max_cap = 0;
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    points.push(wire.len());
    for end in points {
        if end < start {
            continue;
        }
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return max_cap.max(buf.capacity()),
            }
            max_cap = max_cap.max(buf.capacity());
        }
        max_cap = max_cap.max(buf.capacity());
    }
    let _ = codec.decode_eof(&mut buf);
    max_cap.max(buf.capacity())
}

/// Largest fixed part any decoder reserves for (a signal header with a
/// 4096-byte text, or a magic request with a 1024-byte name).
const SLACK: usize = 8 + 4096 + 16;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn tcp_decoders_survive_anything(wire in proptest::collection::vec(any::<u8>(), 0..3000),
                                     cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let bound = wire.len() * 2 + SLACK;
        prop_assert!(feed(tcp_upload::UploadCodec::new(1016, 1 << 40), &wire, &cuts) <= bound);
        prop_assert!(feed(magic::RequestCodec, &wire, &cuts) <= bound);
        prop_assert!(feed(magic::ResponseCodec::default(), &wire, &cuts) <= bound);
        prop_assert!(feed(signal::SignalCodec::default(), &wire, &cuts) <= bound);
    }

    #[test]
    fn signal_decoder_survives_tag_soup(parts in proptest::collection::vec(
        prop_oneof![
            Just(b"PIN".to_vec()), Just(b"SAF".to_vec()), Just(b"RAF".to_vec()),
            Just(b"SAR".to_vec()), Just(b"DON".to_vec()), Just(b"ERR".to_vec()),
            Just(vec![0xFF, 0xFF]), Just(vec![0, 1]), Just(vec![0x80, 0, 0, 0, 0, 0, 0, 0]),
            proptest::collection::vec(any::<u8>(), 0..8),
        ], 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let wire: Vec<u8> = parts.concat();
        prop_assert!(feed(signal::SignalCodec::new(4096, 1 << 30), &wire, &cuts) <= wire.len() * 2 + SLACK);
    }

    #[test]
    fn udp_parsers_survive_anything(d in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = udp_upload::parse_file_info(&d, udp_upload::DEFAULT_MAX_HEADER_LEN);
        let _ = udp_upload::parse_buffer_size(&d);
        let _ = udp_upload::parse_reply(&d);
        let _ = udp_download::parse_request(&d, udp_download::DEFAULT_MAX_REQUEST_LEN);
        let _ = udp_download::parse_stat_reply(&d);
        let _ = udp_download::Assembler::new().accept(&d);
        let _ = udp_sum::parse_request(&d, udp_sum::DEFAULT_MAX_REQUEST_LEN);
        let _ = udp_sum::parse_reply(&d);
    }

    #[test]
    fn file_info_round_trips(name in "\\PC{0,64}", size in any::<u64>(), checksum in any::<u32>()) {
        let info = udp_upload::FileInfo { checksum, name, size };
        let wire = udp_upload::encode_file_info(&info);
        prop_assert_eq!(udp_upload::parse_file_info(&wire, 8192), Ok(info));
    }

    #[test]
    fn magic_request_round_trips(name in "\\PC{1,200}") {
        let mut buf = BytesMut::new();
        let req = magic::FileRequest { name };
        magic::RequestCodec.encode(&req, &mut buf).unwrap();
        prop_assert_eq!(magic::RequestCodec.decode(&mut buf).unwrap(), Some(req));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn signal_texts_round_trip(text in "\\PC{0,100}") {
        for frame in [
            signal::SignalFrame::RequestFile(text.clone()),
            signal::SignalFrame::Error(text.clone()),
            signal::SignalFrame::Done(text.clone()),
        ] {
            let wire = signal::encode(frame.clone()).unwrap();
            let mut buf = BytesMut::from(&wire[..]);
            prop_assert_eq!(signal::SignalCodec::default().decode(&mut buf).unwrap(), Some(frame));
        }
    }

    #[test]
    fn sum_requests_round_trip(name in "[A-Za-z][A-Za-z .]{0,30}[A-Za-z]", n in 1i64..=100,
                               layout in prop_oneof![
                                   Just(udp_sum::Layout::Separated(b':')),
                                   Just(udp_sum::Layout::Separated(b',')),
                                   Just(udp_sum::Layout::Separated(b';')),
                                   Just(udp_sum::Layout::Separated(b'|')),
                                   Just(udp_sum::Layout::Separated(b'\n')),
                                   Just(udp_sum::Layout::JsonObject),
                                   Just(udp_sum::Layout::JsonArray)]) {
        let wire = &udp_sum::encode_request(&name, n, layout)[0];
        prop_assert_eq!(
            udp_sum::parse_request(wire, 1024),
            Ok(udp_sum::SumRequest::Full { name, number: n, layout })
        );
    }

    /// Whatever the input, an accepted path has only normal components and
    /// stays below the root once joined to it.
    #[test]
    fn names_never_escape(raw in "[a./\\\\\\x00-\\x1f%é]{0,40}") {
        if let Ok(p) = names::RelPath::parse(&raw, 1024) {
            let root = std::path::Path::new("/srv/root");
            let joined = root.join(p.to_path_buf());
            prop_assert!(joined.starts_with(root));
            prop_assert!(p.to_path_buf().components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
        if let Ok(n) = names::SafeName::for_upload(&raw) {
            prop_assert!(!n.as_str().contains(['/', '\\', '\0']));
            prop_assert!(n.as_str() != "." && n.as_str() != "..");
        }
    }
}

/// Every tag whose bytes after it differ between the two signal dialects.
const DIALECT_TAGS: [signal::Tag; 4] = [
    signal::Tag::Saf,
    signal::Tag::Raf,
    signal::Tag::Rar,
    signal::Tag::Sar,
];

/// The ferry frame for `tag` with `text` (a `SAF` of `size` bytes).
fn ferry_frame(tag: signal::Tag, text: &str, size: u64) -> Vec<u8> {
    use signal::SignalFrame as F;
    let frame = match tag {
        signal::Tag::Saf => F::FileHeader {
            name: text.to_owned(),
            size,
        },
        signal::Tag::Raf => F::RequestFile(text.to_owned()),
        signal::Tag::Rar => F::RequestRepo(text.to_owned()),
        _ => F::SendRepo(text.to_owned()),
    };
    signal::encode(frame).expect("texts are within the cap")
}

/// Checks that no prefix of `after` is taken for `other`, and that the
/// whole of it is taken for `want`.
fn detects(
    tag: signal::Tag,
    after: &[u8],
    want: signal::handout::Dialect,
) -> Result<(), TestCaseError> {
    for cut in 0..after.len() {
        let got = signal::handout::detect(tag, &after[..cut]);
        prop_assert!(
            got.is_none() || got == Some(want),
            "{:?} {:?}: {:?}",
            tag,
            &after[..cut],
            got
        );
    }
    prop_assert_eq!(signal::handout::detect(tag, after), Some(want));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// No ferry frame is ever taken for a handout one, whatever its text
    /// (up to the largest ferry frames) and however little of it has arrived.
    #[test]
    fn ferry_requests_are_never_handout(text in "\\PC{1,300}", long in 0usize..=signal::MAX_TEXT_LEN,
                                        size in any::<u64>()) {
        let long_text = "x".repeat(long.max(1));
        for tag in DIALECT_TAGS {
            for text in [&text, &long_text] {
                let wire = ferry_frame(tag, text, size);
                detects(tag, &wire[signal::TAG_LEN..], signal::handout::Dialect::Ferry)?;
            }
        }
        // Empty texts too, where ferry frames them (SAR never does).
        for tag in [signal::Tag::Saf, signal::Tag::Raf, signal::Tag::Rar] {
            let wire = ferry_frame(tag, "", size);
            detects(tag, &wire[signal::TAG_LEN..], signal::handout::Dialect::Ferry)?;
        }
        prop_assert!(signal::encode(signal::SignalFrame::SendRepo(String::new())).is_err());
    }

    /// Every name the normaliser accepts, sent the handout's way (no length),
    /// is taken for a handout request; so is every `SAR` file count below 65,536.
    #[test]
    fn handout_requests_are_never_ferry(raw in "[ -~é\\x00-\\x1f\\u{80}-\\u{9f}\\u{2028}]{1,60}",
                                        any_name in "\\PC{1,60}", count in 0u32..65_536) {
        for raw in [&raw, &any_name] {
            let accepted = names::SafeName::for_upload(raw).is_ok()
                || names::RelPath::parse(raw, 1024).is_ok();
            if accepted {
                for tag in [signal::Tag::Saf, signal::Tag::Raf, signal::Tag::Rar] {
                    detects(tag, raw.as_bytes(), signal::handout::Dialect::Handout)?;
                }
            }
        }
        detects(signal::Tag::Sar, &count.to_be_bytes(), signal::handout::Dialect::Handout)?;
    }
}
