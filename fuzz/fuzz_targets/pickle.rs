//! The pickle reader alone (faster to explore than through the zip container).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = repghost::weights::pickle::parse(data);
});
