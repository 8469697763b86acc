//! Fuzzes every one-datagram parser of the three UDP protocols.
#![no_main]

use ferry_proto::{udp_download, udp_sum, udp_upload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|d: &[u8]| {
    if let Ok(info) = udp_upload::parse_file_info(d, udp_upload::DEFAULT_MAX_HEADER_LEN) {
        // What parses re-encodes to something that parses the same.
        let again = udp_upload::parse_file_info(&udp_upload::encode_file_info(&info), usize::MAX);
        assert_eq!(again, Ok(info));
    }
    let _ = udp_upload::parse_buffer_size(d);
    let _ = udp_upload::parse_reply(d);
    let _ = udp_download::parse_request(d, udp_download::DEFAULT_MAX_REQUEST_LEN);
    let _ = udp_download::parse_stat_reply(d);
    let _ = udp_download::Assembler::new().accept(d);
    if let Ok(udp_sum::SumRequest::Full { number, layout, .. }) = udp_sum::parse_request(d, udp_sum::DEFAULT_MAX_REQUEST_LEN) {
        let _ = udp_sum::encode_reply("Server of ferry", number, layout);
    }
    let _ = udp_sum::parse_reply(d);
});
