//! Fuzzes the magic_request decoder: arbitrary bytes, cut into pieces whose sizes come
//! from the input, never panic and never grow the buffer past input + header.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|input: &[u8]| {
    let Some((&step, wire)) = input.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut codec = ferry_proto::magic::RequestCodec;
    let mut buf = BytesMut::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= 2 * wire.len() + 8192, "buffer grew past the caps");
    }
    let _ = codec.decode_eof(&mut buf);
});
