#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conduit::fuzz_targets::url_preview(data));
