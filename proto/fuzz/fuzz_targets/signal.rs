//! Fuzzes the signal decoder: arbitrary bytes, cut into pieces whose sizes come
//! from the input, never panic and never grow the buffer past input + header.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| common::feed(ferry_proto::signal::SignalCodec::new(4096, 1 << 40), input));
