//! The workspace: every buffer one call writes, planned once per (batch, height, width, threads)
//! so that a call allocates nothing, and the buffer plan of a bottleneck's layers.

use std::sync::Mutex;

use super::{chains, ld, FeatureMap, DEPTH_FIRST_MIN};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::profile::Profile;
use crate::quant::engine::QWork;
use crate::team::Team;

/// A float buffer whose first element is 64-byte aligned.
pub(crate) struct Buf {
    raw: Vec<f32>,
    off: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize) -> Self {
        let raw = vec![0.0f32; len + 16];
        let off = raw.as_ptr().align_offset(64).min(15);
        Buf { raw, off, len }
    }
    pub fn get(&self) -> &[f32] {
        &self.raw[self.off..self.off + self.len]
    }
    pub fn get_mut(&mut self) -> &mut [f32] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

/// Number of activation buffers a layer-by-layer bottleneck rotates through: its input, the
/// two ghost modules' intermediates, the projection's intermediate and its output.
const SLOTS: usize = 5;

/// One of the workspace's activation buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(usize);

impl Slot {
    /// Where the stem writes.
    pub const FIRST: Slot = Slot(0);

    /// The first `K` buffers other than `self`, in order: the free buffers of a layer whose
    /// input is in `self`. `K` is at most four (checked when compiled).
    pub fn others<const K: usize>(self) -> [Slot; K] {
        const { assert!(K < SLOTS, "a bottleneck has four buffers besides its input") };
        let mut out = [Slot(0); K];
        let mut free = (0..SLOTS).filter(|&i| i != self.0);
        for o in out.iter_mut() {
            *o = Slot(free.next().unwrap_or(0));
        }
        out
    }
}

/// The activation buffers, addressed by [`Slot`].
pub(crate) struct Bufs([Buf; SLOTS]);

impl Bufs {
    fn new(len: usize) -> Self {
        Bufs(std::array::from_fn(|_| Buf::new(len)))
    }

    pub fn get(&self, s: Slot) -> &[f32] {
        self.0[s.0].get()
    }

    pub fn get_mut(&mut self, s: Slot) -> &mut [f32] {
        self.0[s.0].get_mut()
    }

    /// `r` to read and `w` to write; they must differ.
    pub fn pair(&mut self, r: Slot, w: Slot) -> (&[f32], &mut [f32]) {
        let [a, b] = self
            .0
            .get_disjoint_mut([r.0, w.0])
            .expect("a kernel cannot read and write one buffer");
        (a.get(), b.get_mut())
    }

    /// `r` to read, `a` and `b` to write; all three must differ.
    pub fn three(&mut self, r: Slot, a: Slot, b: Slot) -> (&[f32], &mut [f32], &mut [f32]) {
        let [r, a, b] = self
            .0
            .get_disjoint_mut([r.0, a.0, b.0])
            .expect("three distinct buffers");
        (r.get(), a.get_mut(), b.get_mut())
    }

    fn poison(&mut self) {
        self.0.iter_mut().for_each(|b| b.get_mut().fill(f32::NAN));
    }
}

/// One thread's share of a batch: a single-image workspace and the rows of the batch's
/// pooled features and feature maps that its images fill.
pub(crate) struct Share {
    pub ws: Workspace,
    pub start: usize,
    pub len: usize,
    pub pooled: Vec<f32>,
    pub features: Vec<Vec<f32>>,
}

/// A batch split between threads: a persistent team, one member per share.
pub(crate) struct Split {
    pub team: Team,
    pub shares: Vec<Mutex<Share>>,
}

/// Everything one inference writes, sized for one input shape. Make one per thread that
/// calls the model; a workspace for several threads brings its own.
pub struct Workspace {
    pub(crate) batch: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    threads: usize,
    /// Set to `Some(Profile::default())` to time each kind of layer.
    pub profile: Option<Profile>,
    /// A single image's bottlenecks whose output map has at least this many pixels run
    /// depth-first, in strips of rows (`depth.rs`); smaller ones, whose maps fit in L2, run
    /// layer by layer, which splits better between two threads. `usize::MAX` runs every
    /// bottleneck layer by layer; 0 every RepGhost bottleneck depth-first. Default
    /// [`DEPTH_FIRST_MIN`].
    pub depth_first_min: usize,
    pub(crate) bufs: Bufs,
    /// Strip buffers of the depth-first chains, one per thread.
    pub(crate) strips: [Buf; 2],
    pub(crate) scratch: Vec<f32>,
    /// `[batch, final channels]`: the head's input.
    pub(crate) pooled: Vec<f32>,
    pub(crate) hidden: Vec<f32>,
    pub(crate) logits: Vec<f32>,
    pub(crate) features: Vec<FeatureMap>,
    /// With several threads and one image: the helper that takes half of each layer.
    pub(crate) team: Option<Team>,
    /// With several threads and images: the batch's shares, run in parallel through the
    /// stem, bottlenecks and pooling; the head then runs once over the batch's rows.
    pub(crate) split: Option<Split>,
    /// An INT8 model's buffers (its float buffers are then empty).
    pub(crate) q: Option<QWork>,
}

impl Workspace {
    /// Images per call.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The input's height and width.
    pub fn input_hw(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Threads that run a call: the batch's shares, or for one image the two halves of its
    /// larger layers (a single image uses at most two).
    pub fn threads(&self) -> usize {
        self.threads
    }
}

fn spawn_error(e: std::io::Error) -> Error {
    Error::Input(format!("cannot start a worker thread: {e}"))
}

impl Model {
    /// A workspace for `batch` images of `height × width`, run on the calling thread.
    pub fn workspace(&self, batch: usize, height: usize, width: usize) -> Result<Workspace> {
        self.plan_workspace(batch, height, width, batch)
    }

    /// The buffers for `batch` images, with activation buffers for `images` of them at a
    /// time (the batch, or 0 where shares of the batch bring their own).
    fn plan_workspace(&self, batch: usize, height: usize, width: usize, images: usize) -> Result<Workspace> {
        if batch == 0 || height == 0 || width == 0 {
            return Err(Error::Input(format!(
                "empty input shape {batch}x{height}x{width}"
            )));
        }
        let (mut h, mut w) = self.stem.out_hw(height, width);
        let mut most = h * w * ld(self.stem.cout());
        let mut widest = self.stem.cout();
        let mut features = Vec::new();
        let mut stride = height.div_ceil(h).max(1);
        let mut strip = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            if let Some((first, second)) = chains(b, h, w) {
                strip = strip.max(first.scratch_len());
                strip = strip.max(second.map_or(0, |c| c.scratch_len()));
            }
            let mid = b.ghost1.out_channels();
            most = most.max(h * w * ld(mid.max(b.ghost1.primary.cout())));
            if let Some(dw) = &b.dw {
                (h, w) = dw.out_hw(h, w);
                stride *= 2;
            }
            let out = b.ghost2.out_channels();
            most = most.max(h * w * ld(out.max(b.ghost2.primary.cout()).max(b.ghost1.primary.cin())));
            widest = widest.max(mid).max(out);
            if self.taps.contains(&i) {
                features.push(FeatureMap {
                    n: batch,
                    h,
                    w,
                    c: out,
                    stride,
                    data: vec![0.0; batch * h * w * out],
                });
            }
        }
        most = most.max(h * w * ld(self.final_conv.cout()));
        widest = widest.max(self.final_conv.cout());
        let int8 = self.quant.as_deref().filter(|_| images > 0);
        let strip = if images > 0 && int8.is_none() { strip } else { 0 };
        if int8.is_some() {
            most = 0;
        }
        Ok(Workspace {
            batch,
            height,
            width,
            threads: 1,
            profile: None,
            depth_first_min: DEPTH_FIRST_MIN,
            bufs: Bufs::new(images * most),
            strips: std::array::from_fn(|_| Buf::new(strip)),
            scratch: vec![0.0; 3 * widest + 64],
            pooled: vec![0.0; batch * self.final_conv.cout()],
            hidden: vec![0.0; batch * self.conv_head.cout()],
            logits: vec![0.0; batch * self.num_classes],
            features,
            team: None,
            split: None,
            // The INT8 layers run one image at a time (its maps stay in cache).
            q: int8.map(|q| QWork::new(self, q, 1, height, width)),
        })
    }

    /// A workspace for `threads` threads (its own; the calling thread is one of them). A
    /// batch is split between the threads in contiguous shares, and each runs its images one
    /// at a time through a single-image workspace, so that every layer's maps stay in cache
    /// (a 32-image map does not); the head (`conv_head`, classifier) then runs once over the
    /// batch's pooled rows. A single image splits its larger layers between two threads.
    pub fn workspace_threads(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        threads: usize,
    ) -> Result<Workspace> {
        let threads = threads.max(1);
        if batch <= 1 {
            let mut ws = self.workspace(batch, height, width)?;
            if threads > 1 {
                ws.team = Some(Team::new().map_err(spawn_error)?);
                ws.threads = 2;
            }
            return Ok(ws);
        }
        let t = threads.min(batch);
        let mut ws = self.plan_workspace(batch, height, width, 0)?;
        let fin = self.final_conv.cout();
        let mut start = 0;
        let mut shares = Vec::with_capacity(t);
        for i in 0..t {
            let len = batch / t + usize::from(i < batch % t);
            let one = self.workspace(1, height, width)?;
            let features = one
                .features
                .iter()
                .map(|f| vec![0.0; len * f.data.len()])
                .collect();
            shares.push(Mutex::new(Share {
                ws: one,
                start,
                len,
                pooled: vec![0.0; len * fin],
                features,
            }));
            start += len;
        }
        ws.split = Some(Split {
            team: Team::with_size(t).map_err(spawn_error)?,
            shares,
        });
        ws.threads = t;
        Ok(ws)
    }

    #[doc(hidden)]
    /// Fills every buffer with NaN, so that a test can prove each output was written.
    pub fn poison(&self, ws: &mut Workspace) {
        ws.bufs.poison();
        if let Some(q) = &mut ws.q {
            q.poison();
        }
        for b in ws.strips.iter_mut() {
            b.get_mut().fill(f32::NAN);
        }
        for v in [&mut ws.pooled, &mut ws.hidden, &mut ws.logits, &mut ws.scratch] {
            v.fill(f32::NAN);
        }
        for f in ws.features.iter_mut() {
            f.data.fill(f32::NAN);
        }
        if let Some(split) = &mut ws.split {
            for s in split.shares.iter_mut() {
                let s = s.get_mut().unwrap_or_else(|e| e.into_inner());
                self.poison(&mut s.ws);
                s.pooled.fill(f32::NAN);
                s.features.iter_mut().for_each(|f| f.fill(f32::NAN));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slot;

    #[test]
    fn the_free_slots_of_a_layer_exclude_its_input() {
        assert_eq!(Slot(2).others::<4>(), [Slot(0), Slot(1), Slot(3), Slot(4)]);
        assert_eq!(Slot(0).others::<1>(), [Slot(1)]);
        assert_eq!(Slot(4).others::<3>(), [Slot(0), Slot(1), Slot(2)]);
    }
}
