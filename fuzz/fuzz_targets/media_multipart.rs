#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conduit::fuzz_targets::media_multipart(data));
