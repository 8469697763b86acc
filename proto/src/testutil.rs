//! Helpers shared by the codec tests.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Feeds `wire` to `codec` in one piece and collects every frame, then EOF.
pub(crate) fn decode_all<D: Decoder>(codec: &mut D, wire: &[u8]) -> Result<Vec<D::Item>, D::Error> {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Some(item) = codec.decode(&mut buf)? {
        out.push(item);
    }
    while let Some(item) = codec.decode_eof(&mut buf)? {
        out.push(item);
    }
    Ok(out)
}

/// Feeds `wire` split into two pieces at `cut` and collects every frame.
pub(crate) fn decode_split<D: Decoder>(
    codec: &mut D,
    wire: &[u8],
    cut: usize,
) -> Result<Vec<D::Item>, D::Error> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in [&wire[..cut], &wire[cut..]] {
        buf.extend_from_slice(part);
        while let Some(item) = codec.decode(&mut buf)? {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf)? {
        out.push(item);
    }
    Ok(out)
}

/// Feeds `wire` one byte at a time and collects every frame.
pub(crate) fn decode_bytewise<D: Decoder>(
    codec: &mut D,
    wire: &[u8],
) -> Result<Vec<D::Item>, D::Error> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in wire {
        buf.extend_from_slice(&[*b]);
        while let Some(item) = codec.decode(&mut buf)? {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf)? {
        out.push(item);
    }
    Ok(out)
}
