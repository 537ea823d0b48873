#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cbt_fuzz::stored(data));
