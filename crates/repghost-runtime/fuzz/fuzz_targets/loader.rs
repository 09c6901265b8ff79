//! The deploy runtime's model loader, and one run of whatever it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = repghost_runtime::Model::from_bytes(data) {
        if let Ok(mut ws) = m.workspace(1, 32, 32) {
            let x = vec![0.5f32; m.in_chans() * 32 * 32];
            let _ = m.run(&mut ws, &x, repghost_runtime::Layout::Nchw);
        }
    }
});
