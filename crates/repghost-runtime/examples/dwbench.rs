use repghost_runtime::act::Act;
use repghost_runtime::kernels::depthwise::{Depthwise, Shape};
use repghost_runtime::kernels::View;
use std::time::Instant;
fn main() {
    for (h, c, k) in [
        (112usize, 16usize, 3usize),
        (56, 36, 3),
        (28, 60, 3),
        (14, 336, 3),
        (7, 480, 5),
    ] {
        let d = Depthwise::new(&vec![0.1; c * k * k], c, k, 1, vec![0.0; c], Act::Relu);
        let sraw = vec![1.0f32; h * h * c + 16];
        let so = if std::env::var_os("ALIGN").is_some() {
            sraw.as_ptr().align_offset(64)
        } else {
            (sraw.as_ptr().align_offset(64) + 1) % 16
        };
        let src = &sraw[so..so + h * h * c];
        let mut draw = vec![0.0f32; h * h * c + 16];
        let doff = draw.as_ptr().align_offset(64);
        let dst = &mut draw[doff..doff + h * h * c];

        let macs = (h * h * c * k * k) as f64;
        let reps = (5e7 / macs) as usize + 1;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                d.run(
                    c,
                    Shape::new(1, h, h),
                    View::new(src, c, 0),
                    dst,
                    c,
                    0,
                    false,
                    None,
                );
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{h}x{h}x{c} k{k}: {:.1} us, {:.2} GMAC/s",
            best * 1e6,
            macs / best / 1e9
        );
    }
}
