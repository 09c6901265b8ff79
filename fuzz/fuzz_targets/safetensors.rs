//! safetensors with our metadata (config JSON, preprocessing JSON, form).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = repghost::weights::safetensors_io::read("fuzz.safetensors".as_ref(), data);
    let _ = repghost::train::checkpoint::from_bytes("fuzz.ckpt".as_ref(), data);
});
