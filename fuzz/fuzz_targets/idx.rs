//! Fashion-MNIST IDX files: the input splits into an images file and a labels file; every
//! image of a successful parse is read back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len().saturating_sub(1));
    let (labels, images) = data.get(1..).unwrap_or_default().split_at(cut.min(data.len().saturating_sub(1)));
    if let Ok(m) = repghost_data::idx::from_bytes("i".as_ref(), images, "l".as_ref(), labels) {
        for i in 0..m.len().min(64) {
            let _ = m.image(i);
        }
    }
});
