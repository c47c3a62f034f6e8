//! Any bytes as limits and a sequence of delivered messages: the assembler never panics and
//! keeps its promises. The input format and the check are in `shared::fuzzing`
//! (`AssemblerInput`, `check_assembler`), which the stable tests replay too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| shared::fuzzing::check_assembler(input));
