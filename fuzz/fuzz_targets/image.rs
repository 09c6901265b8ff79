//! Image decoding and the whole eval preprocessing, as `predict` runs them on a file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = repghost_data::decode(data) {
        let mut pre = repghost_data::Preprocess::imagenet();
        pre.img_size = 32;
        let _ = pre.apply(&img);
    }
});
