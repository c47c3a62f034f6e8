//! Any bytes as an event-stream body, cut into chunks the input chooses: the SSE layer never
//! panics or waits, and yields what the body gives in one chunk. The check is
//! `publisher::fuzzing::check_sse`, which the stable tests replay too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| publisher::fuzzing::check_sse(input));
