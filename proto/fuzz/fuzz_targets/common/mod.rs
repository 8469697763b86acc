//! The body every decoder target shares.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Feeds `input` to `codec`: the first byte sets the size of the pieces the
/// rest arrives in. Decoding never panics, and the buffer never grows past
/// the input plus the largest header.
pub fn feed<D: Decoder>(mut codec: D, input: &[u8]) {
    let Some((&step, wire)) = input.split_first() else { return };
    let step = usize::from(step).max(1);
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
}
