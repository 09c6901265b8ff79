use repghost_runtime::act::Act;
use repghost_runtime::kernels::depthwise::{Depthwise, Shape};
use repghost_runtime::kernels::View;
use std::time::Instant;
fn main() {
    for (h, c, k, st) in [
        (112usize, 16usize, 3usize, 1usize),
        (56, 36, 3, 1),
        (28, 60, 3, 1),
        (14, 336, 3, 1),
        (7, 480, 5, 1),
        (112, 48, 3, 2),
        (56, 72, 5, 2),
        (28, 240, 3, 2),
        (14, 672, 5, 2),
    ] {
        let d = Depthwise::new(&vec![0.1; c * k * k], c, k, st, vec![0.0; c], Act::Relu);
        // Pixel stride padded to 16 floats, as the executor lays maps out.
        let ld = c.div_ceil(16) * 16;
        let sraw = vec![1.0f32; h * h * ld + 16];
        let so = sraw.as_ptr().align_offset(64);
        let src = &sraw[so..so + h * h * ld];
        let mut draw = vec![0.0f32; h * h * ld + 16];
        let doff = draw.as_ptr().align_offset(64);
        let dst = &mut draw[doff..doff + h * h * ld];

        let (oh, ow) = d.out_hw(h, h);
        let macs = (oh * ow * c * k * k) as f64;
        let reps = (5e7 / macs) as usize + 1;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                d.run(
                    c,
                    Shape::new(1, h, h),
                    View::new(src, ld, 0),
                    dst,
                    ld,
                    0,
                    false,
                    None,
                );
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{h}x{h}x{c} k{k} s{st}: {:.1} us, {:.2} GMAC/s",
            best * 1e6,
            macs / best / 1e9
        );
    }
}
