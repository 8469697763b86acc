//! Fuzzes the handout framing of signal: arbitrary arrivals (a gap in ms,
//! then up to 255 bytes, from the input) into a name and a file's data with
//! timeouts fired at their deadlines, then the end of the stream. Never
//! panics, and never gives out more bytes than came in.
#![no_main]

use std::time::Duration;

use ferry_proto::Instant;

use bytes::Bytes;
use ferry_proto::signal::handout::{detect, After, DataEvent, FileData, QuietText};
use ferry_proto::signal::Tag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    for tag in [Tag::Saf, Tag::Raf, Tag::Rar, Tag::Sar] {
        let _ = detect(tag, input);
    }
    let t0 = Instant::now();
    let mut now = t0;
    let mut name = QuietText::new(Duration::from_millis(50), 1024, true);
    let after = if input.first().is_some_and(|b| b & 1 == 1) {
        After::Name
    } else {
        After::Request
    };
    let mut data = FileData::new(Duration::from_millis(50), Duration::from_millis(200), after);
    let (mut given, mut out) = (0usize, 0usize);
    let mut count = |evs: Vec<DataEvent>, out: &mut usize| {
        for ev in evs {
            match ev {
                DataEvent::Data(b) => *out += b.len(),
                DataEvent::End { rest, .. } => *out += rest.len(),
            }
        }
    };
    let mut rest = input;
    while let [gap, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*gap));
        while let Some(d) = data.deadline().filter(|d| *d <= now) {
            count(data.on_timeout(d).unwrap_or_default(), &mut out);
        }
        let _ = name.on_timeout(now);
        let _ = name.on_bytes(now, bytes, None);
        given += bytes.len();
        count(
            data.on_bytes(now, Bytes::copy_from_slice(bytes))
                .unwrap_or_default(),
            &mut out,
        );
    }
    if let Ok(evs) = data.on_eof() {
        count(evs, &mut out);
    }
    assert!(out <= given, "{out} bytes out of {given} in");
});
