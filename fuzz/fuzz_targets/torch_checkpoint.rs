//! Any bytes as a weight file (torch zip + pickle, safetensors, or neither): an error or a
//! model, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let device = burn::tensor::Device::flex();
    let opts = repghost::weights::LoadOptions::default();
    let _ = repghost::weights::load_bytes("fuzz.pth".as_ref(), data, &opts, &device);
});
