//! Running a [`Model`]: the stem, the bottlenecks (`block.rs`: depth-first in strips of rows
//! or layer by layer), the final 1×1 conv and pooling per image, then the head over the
//! batch's pooled rows. `workspace.rs` plans the buffers once per input shape, so that a call
//! allocates nothing; `batch.rs` splits a batch between threads.

mod batch;
mod block;
mod workspace;

pub(crate) use block::chains;
pub use workspace::Workspace;

use crate::error::{Error, Result};
use crate::kernels::View;
use crate::model::Model;
use crate::profile::timed;
use block::{block, Map};
use workspace::Slot;

/// Memory layout of the caller's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[n, c, h, w]`, PyTorch's.
    Nchw,
    /// `[n, h, w, c]`.
    Nhwc,
}

/// An NHWC feature map.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub stride: usize,
    pub data: Vec<f32>,
}

/// Row stride of a map with `c` channels: a multiple of 16 floats (8 for narrow maps), so
/// that with 64-byte aligned buffers no vector load straddles two cache lines.
pub(crate) fn ld(c: usize) -> usize {
    if c <= 8 {
        8
    } else {
        c.next_multiple_of(16)
    }
}

/// Default [`Workspace::depth_first_min`]: 28 × 28, the maps of the first SE stage.
pub const DEPTH_FIRST_MIN: usize = 784;

impl Model {
    fn check(&self, ws: &Workspace, input: &[f32]) -> Result<()> {
        let want = ws.batch * self.in_chans * ws.height * ws.width;
        if input.len() != want {
            return Err(Error::Input(format!(
                "input has {} values; the workspace expects {}x{}x{}x{} = {want}",
                input.len(),
                ws.batch,
                self.in_chans,
                ws.height,
                ws.width
            )));
        }
        if input.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input("input holds NaN or infinite values".into()));
        }
        Ok(())
    }

    /// Logits `[batch, num_classes]` of an input of the workspace's shape.
    pub fn run<'w>(&self, ws: &'w mut Workspace, input: &[f32], layout: Layout) -> Result<&'w [f32]> {
        self.check(ws, input)?;
        if ws.split.is_some() {
            self.run_split(ws, input, layout, false);
        } else {
            self.pooled(ws, input, layout);
        }
        self.head(ws);
        Ok(&ws.logits)
    }

    /// The stride-8, -16 and -32 feature maps (NHWC) for detection backbones.
    pub fn features<'w>(
        &self,
        ws: &'w mut Workspace,
        input: &[f32],
        layout: Layout,
    ) -> Result<&'w [FeatureMap]> {
        self.check(ws, input)?;
        if self.quant.is_some() {
            return Err(Error::Input(
                "an INT8 model computes logits only: take feature maps from its float weights".into(),
            ));
        }
        if ws.split.is_some() {
            self.run_split(ws, input, layout, true);
        } else {
            self.body(ws, input, layout, true);
        }
        Ok(&ws.features)
    }

    /// Everything before the head, on the float or the INT8 layers: fills `ws.pooled`.
    fn pooled(&self, ws: &mut Workspace, input: &[f32], layout: Layout) {
        if let (Some(q), Some(qw)) = (self.quant.as_deref(), ws.q.as_mut()) {
            // One image at a time: its u8 maps fit in the caches, a batch's would not.
            let (h, w) = (ws.height, ws.width);
            let per = self.in_chans * h * w;
            let fin = self.final_conv.cout();
            let nchw = layout == Layout::Nchw;
            for (img, pooled) in ws.pooled.chunks_exact_mut(fin).enumerate().take(ws.batch) {
                self.int8_body(
                    q,
                    qw,
                    &input[img * per..(img + 1) * per],
                    nchw,
                    (1, h, w),
                    ws.team.as_ref(),
                    &mut ws.profile,
                    pooled,
                );
            }
        } else {
            let out = self.body(ws, input, layout, false);
            self.pool(ws, out);
        }
    }

    /// Stem and bottlenecks of the workspace's batch; returns the last block's output map.
    fn body(&self, ws: &mut Workspace, input: &[f32], layout: Layout, features: bool) -> Map {
        let n = ws.batch;
        let (h, w) = self.stem.out_hw(ws.height, ws.width);
        let (height, width) = (ws.height, ws.width);
        let buf = ws.bufs.get_mut(Slot::FIRST);
        let lds = ld(self.stem.cout());
        let team = ws.team.as_ref();
        timed(&mut ws.profile, "stem", || {
            self.stem
                .run(n, height, width, input, layout == Layout::Nchw, buf, lds, team)
        });
        let mut x = Map {
            slot: Slot::FIRST,
            h,
            w,
            c: self.stem.cout(),
        };
        let mut k = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            x = block(b, ws, x, n);
            if features && self.taps.contains(&i) {
                let len = n * x.h * x.w * x.c;
                let (src, l) = (ws.bufs.get(x.slot), ld(x.c));
                for (px, dst) in ws.features[k].data[..len].chunks_exact_mut(x.c).enumerate() {
                    dst.copy_from_slice(&src[px * l..px * l + x.c]);
                }
                k += 1;
            }
        }
        x
    }

    /// The final 1×1 conv of the map `x`, then each image's mean over its pixels into
    /// `ws.pooled`.
    fn pool(&self, ws: &mut Workspace, x: Map) {
        let n = ws.batch;
        let fin = self.final_conv.cout();
        let [out] = x.slot.others::<1>();
        {
            let (src, dst) = ws.bufs.pair(x.slot, out);
            let t = ws.team.as_ref();
            timed(&mut ws.profile, "pointwise", || {
                self.final_conv.run(
                    n * x.h * x.w,
                    View::new(src, ld(x.c), 0),
                    dst,
                    ld(fin),
                    0,
                    false,
                    t,
                )
            });
        }
        let start = std::time::Instant::now();
        let hw = x.h * x.w;
        let maps = ws.bufs.get(out);
        let lf = ld(fin);
        for img in 0..n {
            let pooled = &mut ws.pooled[img * fin..(img + 1) * fin];
            pooled.fill(0.0);
            for p in 0..hw {
                let row = &maps[(img * hw + p) * lf..(img * hw + p) * lf + fin];
                pooled.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            let inv = 1.0 / hw as f32;
            pooled.iter_mut().for_each(|a| *a *= inv);
        }
        if let Some(p) = &mut ws.profile {
            p.add("pool", start.elapsed().as_secs_f64() * 1e3);
        }
    }

    /// `conv_head` and the classifier over the batch's pooled rows, split between two of the
    /// workspace's threads where it has them.
    fn head(&self, ws: &mut Workspace) {
        let start = std::time::Instant::now();
        let n = ws.batch;
        let (fin, hid, nc) = (self.final_conv.cout(), self.conv_head.cout(), self.num_classes);
        let team = ws
            .team
            .as_ref()
            .or(ws.split.as_ref().map(|s| &s.team))
            .filter(|t| t.size() >= 2);
        self.conv_head.run(
            n,
            View::new(&ws.pooled, fin, 0),
            &mut ws.hidden,
            hid,
            0,
            false,
            team,
        );
        self.classifier.run(
            n,
            View::new(&ws.hidden, hid, 0),
            &mut ws.logits,
            nc,
            0,
            false,
            team,
        );
        if let Some(p) = &mut ws.profile {
            p.add("head", start.elapsed().as_secs_f64() * 1e3);
        }
    }
}
