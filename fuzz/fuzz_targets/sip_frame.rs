#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cbt_fuzz::sip_frame(data));
