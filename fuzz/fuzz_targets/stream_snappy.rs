//! libFuzzer target `stream_snappy` (see fuzz/src/targets.rs and docs/RELIABILITY.md).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: fastrpc_fuzz::libfuzzer_init(),
    |data: &[u8]| fastrpc_fuzz::libfuzzer_run("stream_snappy", data)
);
