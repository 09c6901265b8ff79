//! Where quantization error enters: the signal-to-quantization-noise ratio at every
//! quantization point of the simulated INT8 network, against the float network it was made
//! from.

use super::calibrate::{Calibrator, Simulator};
use super::reference::{image, Map, Point};
use crate::error::{Error, Result};
use crate::exec::Layout;

/// The SQNR at one quantization point.
#[derive(Clone, Debug, PartialEq)]
pub struct PointSqnr {
    /// The conv whose output this is (`ghost2.cheap`: the block's output, after the residual
    /// add).
    pub key: String,
    /// The map after squeeze-excite scaled it (quantized again).
    pub after_se: bool,
    /// `10 · log10(Σ f² / Σ (f − q)²)`, in dB (infinite where the two agree exactly).
    pub db: f64,
}

impl Simulator {
    /// Per quantization point, in the order of the forward pass: the SQNR of the simulated
    /// INT8 map `q` against the float network's map `f` at the same point, summed over `n`
    /// images of `h × w` (normalized, as for inference). `float` observes the deploy file the
    /// INT8 file was made from. Each point's error includes what the points before it carried
    /// in, so the table shows where the error enters and how it grows.
    #[allow(clippy::too_many_arguments)]
    pub fn sqnr(
        &self,
        float: &Calibrator,
        batch: &[f32],
        n: usize,
        h: usize,
        w: usize,
        layout: Layout,
    ) -> Result<Vec<PointSqnr>> {
        let c = self.net.plan.config.in_chans;
        if float.net.plan.config != self.net.plan.config {
            return Err(Error::Model(
                "the float and INT8 files hold different networks".into(),
            ));
        }
        if n == 0 || batch.len() != n * c * h * w {
            return Err(Error::Input(format!(
                "batch has {} values, {n}x{c}x{h}x{w} expected",
                batch.len()
            )));
        }
        let per = c * h * w;
        let mut sums: Vec<(PointSqnr, f64, f64)> = Vec::new();
        for i in 0..n {
            let x = image(&batch[i * per..][..per], c, h, w, layout == Layout::Nchw);
            let mut maps = Vec::new();
            float
                .net
                .forward(&x, &mut |_, m: &mut Map| maps.push(m.d.clone()));
            let mut j = 0;
            self.net.forward(&x, &mut |p, m: &mut Map| {
                self.fake_quantize(p, m);
                if i == 0 {
                    let (Point::Out(key) | Point::Rescaled(key)) = p;
                    let point = PointSqnr {
                        key: key.to_string(),
                        after_se: matches!(p, Point::Rescaled(_)),
                        db: 0.0,
                    };
                    sums.push((point, 0.0, 0.0));
                }
                let (_, signal, noise) = &mut sums[j];
                for (&f, &q) in maps[j].iter().zip(&m.d) {
                    *signal += f as f64 * f as f64;
                    *noise += (f as f64 - q as f64).powi(2);
                }
                j += 1;
            });
        }
        Ok(sums
            .into_iter()
            .map(|(mut p, signal, noise)| {
                p.db = 10.0 * (signal / noise).log10();
                p
            })
            .collect())
    }
}
