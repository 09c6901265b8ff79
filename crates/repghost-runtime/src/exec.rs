//! Running a [`Model`]: a workspace planned once per (batch, height, width) so that
//! inference allocates nothing, five activation buffers rotated through the bottlenecks, which
//! run depth-first (`depth.rs`) or layer by layer with residual adds accumulated in place.

use std::sync::Mutex;

use crate::depth::{Chain, Op, Residual};
use crate::error::{Error, Result};
use crate::kernels::depthwise::Depthwise;
use crate::kernels::depthwise::Shape;
use crate::kernels::pointwise::Pointwise;
use crate::kernels::View;
use crate::model::{Block, Ghost, Model, Shortcut};
use crate::profile::{timed, Profile};
use crate::team::Team;

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
    fn get(&self) -> &[f32] {
        &self.raw[self.off..self.off + self.len]
    }
    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

/// Everything one inference writes, sized for one input shape. Make one per thread.
pub struct Workspace {
    batch: usize,
    height: usize,
    width: usize,
    /// Threads: a batch is split between them; a single image splits its layers by rows.
    threads: usize,
    /// Set to `Some(Profile::default())` to time each kind of layer.
    pub profile: Option<Profile>,
    /// A single image's bottlenecks whose output map has at least this many pixels run
    /// depth-first, in strips of rows (`depth.rs`); smaller ones, whose maps fit in L2, run
    /// layer by layer, which splits better between two threads. `usize::MAX` runs every
    /// bottleneck layer by layer; 0 every RepGhost bottleneck depth-first. Default
    /// [`DEPTH_FIRST_MIN`].
    pub depth_first_min: usize,
    bufs: [Buf; 5],
    /// Strip buffers of the depth-first chains, one per thread.
    strips: [Buf; 2],
    scratch: Vec<f32>,
    pooled: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    features: Vec<FeatureMap>,
    /// With several threads and one image: the helper thread that takes half of each layer.
    team: Option<Team>,
    /// With several threads and images: one workspace per thread, each taking a share of
    /// the batch.
    parts: Vec<Workspace>,
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

    /// Threads that run a call.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Model {
    /// A workspace for `batch` images of `height × width`.
    pub fn workspace(&self, batch: usize, height: usize, width: usize) -> Result<Workspace> {
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
        let size = batch * most;
        Ok(Workspace {
            batch,
            height,
            width,
            threads: 1,
            profile: None,
            depth_first_min: DEPTH_FIRST_MIN,
            bufs: std::array::from_fn(|_| Buf::new(size)),
            strips: std::array::from_fn(|_| Buf::new(strip)),
            scratch: vec![0.0; 3 * widest + 64],
            pooled: vec![0.0; batch * self.final_conv.cout()],
            hidden: vec![0.0; batch * self.conv_head.cout()],
            logits: vec![0.0; batch * self.num_classes],
            features,
            parts: Vec::new(),
            team: None,
        })
    }

    /// A workspace for `threads` threads. A batch is split between the threads, and each
    /// runs its images one at a time through a single-image workspace of its own, so that
    /// every layer's maps stay in cache (a 32-image map does not); a single image splits its
    /// largest 1×1 convolutions between the threads instead.
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
            ws.threads = threads;
            if threads > 1 {
                ws.team = Some(
                    Team::new().map_err(|e| Error::Input(format!("cannot start a worker thread: {e}")))?,
                );
            }
            return Ok(ws);
        }
        let parts = (0..threads.min(batch))
            .map(|_| self.workspace(1, height, width))
            .collect::<Result<Vec<_>>>()?;
        let mut ws = self.workspace(1, height, width)?;
        ws.batch = batch;
        ws.threads = threads;
        ws.logits = vec![0.0; batch * self.num_classes];
        for (f, p) in ws.features.iter_mut().zip(&parts[0].features) {
            *f = FeatureMap {
                n: batch,
                data: vec![0.0; batch * p.h * p.w * p.c],
                ..p.clone()
            };
        }
        ws.parts = parts;
        Ok(ws)
    }

    /// Runs the images of a split workspace, each thread its share, one image at a time.
    fn run_parts(&self, ws: &mut Workspace, input: &[f32], layout: Layout, features: bool) -> Result<()> {
        let per = self.in_chans * ws.height * ws.width;
        let nc = self.num_classes;
        let t = ws.parts.len();
        let depth_first_min = ws.depth_first_min;
        for p in ws.parts.iter_mut() {
            p.depth_first_min = depth_first_min;
        }
        let n = ws.batch;
        // Contiguous image ranges, one per thread.
        let ranges: Vec<(usize, usize)> = (0..t)
            .scan(0, |start, i| {
                let len = n / t + usize::from(i < n % t);
                let r = (*start, len);
                *start += len;
                Some(r)
            })
            .collect();
        let mut logit_chunks = Vec::with_capacity(t);
        let mut rest: &mut [f32] = &mut ws.logits;
        for &(_, len) in &ranges {
            let (a, b) = rest.split_at_mut(len * nc);
            logit_chunks.push(a);
            rest = b;
        }
        let fsize: Vec<usize> = ws.features.iter().map(|f| f.data.len() / n).collect();
        let mut feat_chunks: Vec<Vec<&mut [f32]>> = (0..t).map(|_| Vec::new()).collect();
        for (f, &size) in ws.features.iter_mut().zip(&fsize) {
            let mut rest: &mut [f32] = &mut f.data;
            for (i, &(_, len)) in ranges.iter().enumerate() {
                let (a, b) = rest.split_at_mut(len * size);
                feat_chunks[i].push(a);
                rest = b;
            }
        }
        let results: Vec<Result<()>> = std::thread::scope(|sc| {
            let handles: Vec<_> = ws
                .parts
                .iter_mut()
                .zip(ranges.iter())
                .zip(logit_chunks.into_iter().zip(feat_chunks))
                .map(|((part, &(start, len)), (logits, mut feats))| {
                    let fsize = &fsize;
                    sc.spawn(move || -> Result<()> {
                        for j in 0..len {
                            let x = &input[(start + j) * per..(start + j + 1) * per];
                            if features {
                                let f = self.features(part, x, layout)?;
                                for ((dst, src), &size) in feats.iter_mut().zip(f).zip(fsize) {
                                    dst[j * size..(j + 1) * size].copy_from_slice(&src.data);
                                }
                            } else {
                                let y = self.run(part, x, layout)?;
                                logits[j * nc..(j + 1) * nc].copy_from_slice(y);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Input("worker panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect()
    }

    #[doc(hidden)]
    /// Fills every buffer with NaN, so that a test can prove each output was written.
    pub fn poison(&self, ws: &mut Workspace) {
        for b in ws.bufs.iter_mut().chain(ws.strips.iter_mut()) {
            b.get_mut().fill(f32::NAN);
        }
        for v in [&mut ws.pooled, &mut ws.hidden, &mut ws.logits, &mut ws.scratch] {
            v.fill(f32::NAN);
        }
        for f in ws.features.iter_mut() {
            f.data.fill(f32::NAN);
        }
        for p in ws.parts.iter_mut() {
            self.poison(p);
        }
    }

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
        if !ws.parts.is_empty() {
            self.run_parts(ws, input, layout, false)?;
            return Ok(&ws.logits);
        }
        let (cur, h, w, ch) = self.body(ws, input, layout, false);
        let n = ws.batch;
        let fin = self.final_conv.cout();
        let out = other(cur, cur);
        {
            let (src, dst) = pair(&mut ws.bufs, cur, out);
            let t = ws.team.as_ref();
            timed(&mut ws.profile, "pointwise", || {
                self.final_conv
                    .run(n * h * w, View::new(src, ld(ch), 0), dst, ld(fin), 0, false, t)
            });
        }
        let start = std::time::Instant::now();
        let hw = h * w;
        let maps = ws.bufs[out].get();
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
        let hid = self.conv_head.cout();
        self.conv_head.run(
            n,
            View::new(&ws.pooled, fin, 0),
            &mut ws.hidden,
            hid,
            0,
            false,
            ws.team.as_ref(),
        );
        let nc = self.num_classes;
        self.classifier.run(
            n,
            View::new(&ws.hidden, hid, 0),
            &mut ws.logits,
            nc,
            0,
            false,
            ws.team.as_ref(),
        );
        if let Some(p) = &mut ws.profile {
            p.add("head", start.elapsed().as_secs_f64() * 1e3);
        }
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
        if !ws.parts.is_empty() {
            self.run_parts(ws, input, layout, true)?;
            return Ok(&ws.features);
        }
        self.body(ws, input, layout, true);
        Ok(&ws.features)
    }

    /// Stem and bottlenecks; returns (buffer, h, w, channels) of the last block's output.
    fn body(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        layout: Layout,
        features: bool,
    ) -> (usize, usize, usize, usize) {
        let n = ws.batch;
        let (mut h, mut w) = self.stem.out_hw(ws.height, ws.width);
        let (height, width) = (ws.height, ws.width);
        let buf = ws.bufs[0].get_mut();
        let lds = ld(self.stem.cout());
        let team = ws.team.as_ref();
        timed(&mut ws.profile, "stem", || {
            self.stem
                .run(n, height, width, input, layout == Layout::Nchw, buf, lds, team)
        });
        let (mut cur, mut ch) = (0, self.stem.cout());
        let mut k = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            (cur, h, w, ch) = block(b, ws, cur, n, h, w, ch);
            if features && self.taps.contains(&i) {
                let len = n * h * w * ch;
                let (src, l) = (ws.bufs[cur].get(), ld(ch));
                for (px, dst) in ws.features[k].data[..len].chunks_exact_mut(ch).enumerate() {
                    dst.copy_from_slice(&src[px * l..px * l + ch]);
                }
                k += 1;
            }
        }
        (cur, h, w, ch)
    }
}

/// Some buffer index other than `a` and `b`.
fn other(a: usize, b: usize) -> usize {
    (0..5).find(|&i| i != a && i != b).expect("five buffers")
}

/// `bufs[r]` to read and `bufs[w]` to write.
fn pair(bufs: &mut [Buf; 5], r: usize, w: usize) -> (&[f32], &mut [f32]) {
    assert_ne!(r, w, "a kernel cannot read and write one buffer");
    if r < w {
        let (a, b) = bufs.split_at_mut(w);
        (a[r].get(), b[0].get_mut())
    } else {
        let (a, b) = bufs.split_at_mut(r);
        (b[0].get(), a[w].get_mut())
    }
}

/// The chains a RepGhost bottleneck on an `h × w` input runs depth-first: the whole block, or
/// (with SE, which needs the mean of the whole map) the part before SE and the part after.
/// `None`: the block runs layer by layer (GhostNet's concatenations).
fn chains(b: &Block, h: usize, w: usize) -> Option<(Chain<'_>, Option<Chain<'_>>)> {
    if b.ghost1.concat.is_some() || b.ghost2.concat.is_some() {
        return None;
    }
    let (oh, ow) = b.dw.as_ref().map_or((h, w), |d| d.out_hw(h, w));
    let mut ops = [Op::Pw(&b.ghost1.primary); 5];
    ops[1] = Op::Dw(&b.ghost1.cheap);
    let mut n = 2;
    if let Some(dw) = &b.dw {
        ops[n] = Op::Dw(dw);
        n += 1;
    }
    let tail = [Op::Pw(&b.ghost2.primary), Op::Dw(&b.ghost2.cheap)];
    if b.se.is_some() {
        return Some((Chain::new(&ops[..n], h, w), Some(Chain::new(&tail, oh, ow))));
    }
    ops[n..n + 2].copy_from_slice(&tail);
    Some((Chain::new(&ops[..n + 2], h, w), None))
}

/// A bottleneck run depth-first: the shortcut first (a projection, layer by layer, into the
/// output buffer), then the chains. Returns where its output went.
#[allow(clippy::too_many_arguments)]
fn block_depth_first(
    b: &Block,
    (first, second): (Chain<'_>, Option<Chain<'_>>),
    ws: &mut Workspace,
    x: usize,
    h: usize,
    w: usize,
    cin: usize,
) -> usize {
    let mut free = (0..5).filter(|&i| i != x);
    let (p, r, s) = (
        free.next().expect("5 buffers"),
        free.next().expect("5 buffers"),
        free.next().expect("5 buffers"),
    );
    let (oh, ow, cout) = second.unwrap_or(first).out_dims();
    let residual = match &b.shortcut {
        Shortcut::Proj { dw, pw } => {
            projection(dw, pw, ws, [x, r, s], Shape::new(1, h, w), cin, cout);
            Residual::InPlace
        }
        Shortcut::Identity => Residual::Add(&[]),
        Shortcut::None => Residual::None,
    };
    let [s0, s1] = &mut ws.strips;
    let strips = [Mutex::new(s0.get_mut()), Mutex::new(s1.get_mut())];
    let team = ws.team.as_ref();
    let [input, mid, out] = ws
        .bufs
        .get_disjoint_mut([x, p, s])
        .expect("three distinct buffers");
    let (input, out) = (input.get(), out.get_mut());
    let residual = match residual {
        Residual::Add(_) => Residual::Add(input),
        r => r,
    };
    match second {
        None => first.run(input, cin, out, residual, &strips, team, &mut ws.profile),
        Some(second) => {
            let c = first.out_dims().2;
            let mid = mid.get_mut();
            first.run(input, cin, mid, Residual::None, &strips, team, &mut ws.profile);
            let se = b.se.as_ref().expect("a split chain has SE");
            let scratch = &mut ws.scratch;
            timed(&mut ws.profile, "se", || {
                se.run(1, oh * ow, mid, ld(c), scratch, team)
            });
            second.run(mid, c, out, residual, &strips, team, &mut ws.profile);
        }
    }
    s
}

/// A projected shortcut, layer by layer: the depthwise conv of `bufs[x]` (`cin` channels of
/// shape `s`) into `bufs[tmp]`, then the 1×1 conv into `bufs[out]` (`cout` channels), where
/// the block's last layer adds onto it.
fn projection(
    dw: &Depthwise,
    pw: &Pointwise,
    ws: &mut Workspace,
    [x, tmp, out]: [usize; 3],
    s: Shape,
    cin: usize,
    cout: usize,
) {
    let (oh, ow) = dw.out_hw(s.h, s.w);
    let (src, dst) = pair(&mut ws.bufs, x, tmp);
    timed(&mut ws.profile, "shortcut", || {
        dw.run(
            cin,
            s,
            View::new(src, ld(cin), 0),
            dst,
            ld(cin),
            0,
            false,
            ws.team.as_ref(),
        )
    });
    let (src, dst) = pair(&mut ws.bufs, tmp, out);
    timed(&mut ws.profile, "shortcut", || {
        pw.run(
            s.n * oh * ow,
            View::new(src, ld(cin), 0),
            dst,
            ld(cout),
            0,
            false,
            ws.team.as_ref(),
        )
    });
}

/// One bottleneck. Input in `bufs[x]`; returns where its output went and its shape.
#[allow(clippy::too_many_arguments)]
fn block(
    b: &Block,
    ws: &mut Workspace,
    x: usize,
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
) -> (usize, usize, usize, usize) {
    if n == 1 {
        if let Some(c) = chains(b, h, w) {
            let (oh, ow, cout) = c.1.unwrap_or(c.0).out_dims();
            if oh * ow >= ws.depth_first_min {
                return (block_depth_first(b, c, ws, x, h, w, cin), oh, ow, cout);
            }
        }
    }
    let mut free = (0..5).filter(|&i| i != x);
    let (p, q, r, s) = (
        free.next().expect("5 buffers"),
        free.next().expect("5 buffers"),
        free.next().expect("5 buffers"),
        free.next().expect("5 buffers"),
    );
    let mid = b.ghost1.out_channels();
    ghost(&b.ghost1, ws, x, cin, p, q, Shape::new(n, h, w), false);
    let (mut t, mut oh, mut ow) = (q, h, w);
    if let Some(dw) = &b.dw {
        let (src, dst) = pair(&mut ws.bufs, q, p);
        timed(&mut ws.profile, "depthwise s2", || {
            dw.run(
                mid,
                Shape::new(n, h, w),
                View::new(src, ld(mid), 0),
                dst,
                ld(mid),
                0,
                false,
                ws.team.as_ref(),
            )
        });
        (t, (oh, ow)) = (p, dw.out_hw(h, w));
    }
    if let Some(se) = &b.se {
        let (buf, scratch, team) = (ws.bufs[t].get_mut(), &mut ws.scratch, ws.team.as_ref());
        timed(&mut ws.profile, "se", || {
            se.run(n, oh * ow, buf, ld(mid), scratch, team)
        });
    }
    let cout = b.ghost2.out_channels();
    // The residual is summed in place: ghost2 accumulates into the buffer that holds it.
    let (target, accumulate) = match &b.shortcut {
        Shortcut::Proj { dw, pw } => {
            projection(dw, pw, ws, [x, r, s], Shape::new(n, h, w), cin, cout);
            (s, true)
        }
        Shortcut::Identity => (x, true),
        Shortcut::None => (s, false),
    };
    let u = if t == p { q } else { p };
    ghost(
        &b.ghost2,
        ws,
        t,
        mid,
        u,
        target,
        Shape::new(n, oh, ow),
        accumulate,
    );
    (target, oh, ow, cout)
}

/// A ghost module from `bufs[src]` (`cin` channels) into `bufs[dst]`, through `bufs[tmp]`.
#[allow(clippy::too_many_arguments)]
fn ghost(
    g: &Ghost,
    ws: &mut Workspace,
    src: usize,
    cin: usize,
    tmp: usize,
    dst: usize,
    s: Shape,
    accumulate: bool,
) {
    let m = s.n * s.h * s.w;
    let init = g.primary.cout();
    let out = g.out_channels();
    let threads = ws.team.as_ref();
    {
        let (a, b) = pair(&mut ws.bufs, src, tmp);
        timed(&mut ws.profile, "pointwise", || {
            g.primary
                .run(m, View::new(a, ld(cin), 0), b, ld(init), 0, false, threads)
        });
    }
    let (a, b) = pair(&mut ws.bufs, tmp, dst);
    match g.concat {
        None => timed(&mut ws.profile, "depthwise", || {
            g.cheap.run(
                out,
                s,
                View::new(a, ld(init), 0),
                b,
                ld(out),
                0,
                accumulate,
                threads,
            )
        }),
        Some(out) => {
            // GhostNet: the concatenation is a copy of the primary output next to the cheap one.
            timed(&mut ws.profile, "depthwise", || {
                g.cheap.run(
                    out - init,
                    s,
                    View::new(a, ld(init), 0),
                    b,
                    ld(out),
                    init,
                    accumulate,
                    threads,
                )
            });
            let t = std::time::Instant::now();
            for px in 0..m {
                let from = &a[px * ld(init)..px * ld(init) + init];
                let to = &mut b[px * ld(out)..px * ld(out) + init];
                if accumulate {
                    to.iter_mut().zip(from).for_each(|(t, &f)| *t += f);
                } else {
                    to.copy_from_slice(from);
                }
            }
            if let Some(p) = &mut ws.profile {
                p.add("concat", t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
}
