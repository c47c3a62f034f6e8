//! Any bytes as a text frame: decoding never panics, and what decodes re-encodes to itself.
//! The check is `shared::fuzzing::check_codec`, which the stable tests replay too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| shared::fuzzing::check_codec(input));
