//! The INT8 network the runtime runs: built from an INT8 file over its plan, and run layer
//! by layer on u8 maps. The stem computes in float from the float image and stores u8;
//! squeeze-excite gates come from the u8 map's channel means and scale it in place (same
//! quantization); the final 1×1 conv's u8 output is pooled into floats for the float head.

use repghost_plan::plan::{self, Plan};

use super::format::Int8File;
use crate::error::Result;
use crate::exec::ld;
use crate::kernels::depthwise::Shape;
use crate::kernels::qdepthwise::QDepthwise;
use crate::kernels::qmaps;
use crate::kernels::qpointwise::QPointwise;
use crate::kernels::requant::{self, Requant, Residual};
use crate::kernels::se::Se;
use crate::model::{act, Model};
use crate::profile::timed;
use crate::team::Team;

/// Row stride of a u8 map of `c` channels.
pub(crate) fn ldq(c: usize) -> usize {
    c.next_multiple_of(16)
}

/// A u8 map's quantization.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q {
    pub scale: f32,
    pub zp: u8,
}

impl Q {
    fn residual(self) -> Residual {
        Residual {
            zp: self.zp as i32,
            scale: self.scale,
        }
    }
}

pub(crate) enum QShortcut {
    None,
    Identity(Residual),
    /// The projection's depthwise and 1×1 convs, and its output as the residual.
    Proj(Box<(QDepthwise, QPointwise, Residual)>),
}

pub(crate) struct QBlock {
    g1: (QPointwise, QDepthwise),
    dw: Option<QDepthwise>,
    /// The quantization of the map squeeze-excite scales (the float model's SE layer).
    se: Option<Q>,
    g2: (QPointwise, QDepthwise),
    shortcut: QShortcut,
}

pub(crate) struct QNet {
    stem_out: Q,
    blocks: Vec<QBlock>,
    final_conv: QPointwise,
    final_out: Q,
}

/// Builds the int8 layers from the file, walking the plan with each map's quantization.
struct Builder<'a> {
    f: &'a Int8File<'a>,
}

impl Builder<'_> {
    fn rq(&self, c: &plan::Conv, s_in: f32, ws: &[f32]) -> Result<(Requant, Vec<f32>, Q)> {
        let (scale, zp) = self.f.output(&c.key)?;
        let sacc: Vec<f32> = ws.iter().map(|&w| s_in * w).collect();
        Ok((
            Requant::new(sacc.clone(), act(c.act), scale, zp),
            sacc,
            Q { scale, zp },
        ))
    }

    fn pointwise(&self, c: &plan::Conv, x: Q) -> Result<(QPointwise, Q)> {
        let (w, ws) = self.f.weight(c)?;
        let b = self.f.f32(&format!("{}.bias", c.key), &[c.cout])?;
        let (rq, sacc, out) = self.rq(c, x.scale, &ws)?;
        let bias = requant::bias(&b, &sacc, x.zp, &w, c.cin);
        let l = QPointwise::new(&w, c.cout, c.cin, bias, rq).map_err(|e| in_layer(&c.key, e))?;
        Ok((l, out))
    }

    fn depthwise(&self, c: &plan::Conv, x: Q) -> Result<(QDepthwise, Q)> {
        let (w, ws) = self.f.weight(c)?;
        let b = self.f.f32(&format!("{}.bias", c.key), &[c.cout])?;
        let (rq, sacc, out) = self.rq(c, x.scale, &ws)?;
        // The depthwise kernel sums `q − zp_in`: no zero-point term in its bias.
        let bias = requant::bias(&b, &sacc, 0, &w, c.k * c.k);
        let l =
            QDepthwise::new(&w, c.cout, c.k, c.stride, bias, x.zp, rq).map_err(|e| in_layer(&c.key, e))?;
        Ok((l, out))
    }
}

fn in_layer(key: &str, e: crate::Error) -> crate::Error {
    match e {
        crate::Error::Model(m) => crate::Error::Model(format!("'{key}': {m}")),
        e => e,
    }
}

impl QNet {
    /// The int8 layers of `plan` from `f`; `model` is the float model of the same file
    /// (its SE layers are used as they are).
    pub(crate) fn new(plan: &Plan, f: &Int8File, model: &Model) -> Result<QNet> {
        let b = Builder { f };
        let (s, zp) = f.output(&plan.stem.key)?;
        let stem_out = Q { scale: s, zp };
        let mut x = stem_out;
        let mut blocks = Vec::new();
        for (pb, fb) in plan.blocks.iter().zip(&model.blocks) {
            let (p1, a) = b.pointwise(&pb.ghost1.primary, x)?;
            let (c1, mut y) = b.depthwise(&pb.ghost1.cheap, a)?;
            let dw = match &pb.conv_dw {
                Some(c) => {
                    let (l, q) = b.depthwise(c, y)?;
                    y = q;
                    Some(l)
                }
                None => None,
            };
            let se = fb.se.as_ref().map(|_| y);
            let (p2, d) = b.pointwise(&pb.ghost2.primary, y)?;
            let (c2, out) = b.depthwise(&pb.ghost2.cheap, d)?;
            let shortcut = match &pb.shortcut {
                plan::Shortcut::None => QShortcut::None,
                plan::Shortcut::Identity => QShortcut::Identity(x.residual()),
                plan::Shortcut::Projection { dw, pw } => {
                    let (dw, f1) = b.depthwise(dw, x)?;
                    let (pw, g) = b.pointwise(pw, f1)?;
                    QShortcut::Proj(Box::new((dw, pw, g.residual())))
                }
            };
            blocks.push(QBlock {
                g1: (p1, c1),
                dw,
                se,
                g2: (p2, c2),
                shortcut,
            });
            x = out;
        }
        let (final_conv, final_out) = b.pointwise(&plan.final_conv, x)?;
        Ok(QNet {
            stem_out,
            blocks,
            final_conv,
            final_out,
        })
    }
}

impl QNet {
    /// The 1×1 convs, in the order of the plan: each block's ghost1 and ghost2 primaries and
    /// projection, then the final conv.
    pub(crate) fn pointwise_layers(&self) -> Vec<&QPointwise> {
        let mut v = Vec::new();
        for b in &self.blocks {
            v.extend([&b.g1.0, &b.g2.0]);
            if let QShortcut::Proj(p) = &b.shortcut {
                v.push(&p.1);
            }
        }
        v.push(&self.final_conv);
        v
    }
}

/// The INT8 buffers of a workspace.
pub(crate) struct QWork {
    bufs: [Vec<u8>; 5],
    /// The stem's float output.
    stem: Vec<f32>,
    /// Depthwise rings, two threads' worth.
    ring: Vec<f32>,
    /// SE sums and hidden layer.
    se: Vec<f32>,
}

impl QWork {
    /// Buffers for `n` images of `height × width`.
    pub(crate) fn new(m: &Model, q: &QNet, n: usize, height: usize, width: usize) -> QWork {
        let (mut h, mut w) = m.stem.out_hw(height, width);
        let stem = n * h * w * ld(m.stem.cout());
        let mut most = h * w * ldq(m.stem.cout());
        let (mut ring, mut se) = (0, 0);
        for (b, qb) in m.blocks.iter().zip(&q.blocks) {
            let wide = [
                b.ghost1.primary.cin(),
                b.ghost1.out_channels(),
                b.ghost2.primary.cout(),
                b.ghost2.out_channels(),
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
            most = most.max(h * w * ldq(wide));
            for d in [Some(&qb.g1.1), qb.dw.as_ref(), Some(&qb.g2.1)]
                .into_iter()
                .flatten()
            {
                ring = ring.max(d.ring_len(w));
            }
            if let QShortcut::Proj(p) = &qb.shortcut {
                let dw = &p.0;
                ring = ring.max(dw.ring_len(w));
            }
            if let Some(s) = &b.se {
                se = se.max(s.channels().next_multiple_of(16) + s.reduced());
            }
            if let Some(d) = &b.dw {
                (h, w) = d.out_hw(h, w);
            }
        }
        most = most.max(h * w * ldq(m.final_conv.cout()));
        QWork {
            bufs: std::array::from_fn(|_| vec![0u8; n * most]),
            stem: vec![0.0; stem],
            ring: vec![0.0; 2 * ring],
            se: vec![0.0; se],
        }
    }

    /// Fills every buffer with values no call leaves there, so that a test can prove each
    /// output was written.
    pub(crate) fn poison(&mut self) {
        self.bufs.iter_mut().for_each(|b| b.fill(0xA5));
        for v in [&mut self.stem, &mut self.ring, &mut self.se] {
            v.fill(f32::NAN);
        }
    }
}

/// The four buffers other than `x`.
fn others(x: usize) -> [usize; 4] {
    let mut out = [0; 4];
    for (o, i) in out.iter_mut().zip((0..5).filter(|&i| i != x)) {
        *o = i;
    }
    out
}

/// `(read, write)` of two distinct buffers.
fn pair(b: &mut [Vec<u8>; 5], r: usize, w: usize) -> (&[u8], &mut [u8]) {
    let [r, w] = b.get_disjoint_mut([r, w]).expect("distinct buffers");
    (r, w)
}

impl Model {
    /// Stem, bottlenecks, final conv and pooling of the workspace's batch on the INT8 layers;
    /// fills `pooled`.
    pub(crate) fn int8_body(
        &self,
        q: &QNet,
        qw: &mut QWork,
        input: &[f32],
        nchw: bool,
        (n, height, width): (usize, usize, usize),
        team: Option<&Team>,
        profile: &mut Option<crate::Profile>,
        pooled: &mut [f32],
    ) {
        let (mut h, mut w) = self.stem.out_hw(height, width);
        let c0 = self.stem.cout();
        timed(profile, "stem", || {
            self.stem
                .run(n, height, width, input, nchw, &mut qw.stem, ld(c0), team);
            let q = q.stem_out;
            qmaps::quantize_rows(
                &qw.stem,
                ld(c0),
                &mut qw.bufs[0],
                ldq(c0),
                (n * h * w, c0),
                1.0 / q.scale,
                q.zp,
            );
        });
        let mut x = 0;
        let mut c = c0;
        for (b, qb) in self.blocks.iter().zip(&q.blocks) {
            let [p, r, s, u] = others(x);
            let m = n * h * w;
            let mid = b.ghost1.out_channels();
            let init = qb.g1.0.cout();
            let ring = &mut qw.ring;
            {
                let (src, dst) = pair(&mut qw.bufs, x, p);
                timed(profile, "pointwise", || {
                    qb.g1.0.run(m, src, ldq(c), dst, ldq(init), team)
                });
            }
            {
                let (src, dst) = pair(&mut qw.bufs, p, r);
                timed(profile, "depthwise", || {
                    qb.g1.1.run(
                        Shape::new(n, h, w),
                        src,
                        ldq(init),
                        dst,
                        ldq(mid),
                        None,
                        ring,
                        team,
                    )
                });
            }
            let mut t = r;
            let (ih, iw) = (h, w);
            if let Some(dw) = &qb.dw {
                let (src, dst) = pair(&mut qw.bufs, r, p);
                timed(profile, "depthwise s2", || {
                    dw.run(
                        Shape::new(n, h, w),
                        src,
                        ldq(mid),
                        dst,
                        ldq(mid),
                        None,
                        ring,
                        team,
                    )
                });
                t = p;
                (h, w) = dw.out_hw(h, w);
            }
            if let (Some(se), Some(sq)) = (&b.se, &qb.se) {
                let buf = &mut qw.bufs[t];
                timed(profile, "se", || {
                    squeeze_excite(se, *sq, n, h * w, buf, ldq(mid), &mut qw.se)
                });
            }
            let cout = b.ghost2.out_channels();
            let (target, res) = match &qb.shortcut {
                QShortcut::Proj(proj) => {
                    let (dw, pw, res) = &**proj;
                    let (oh, ow) = dw.out_hw(ih, iw);
                    let (src, dst) = pair(&mut qw.bufs, x, s);
                    timed(profile, "shortcut", || {
                        dw.run(Shape::new(n, ih, iw), src, ldq(c), dst, ldq(c), None, ring, team)
                    });
                    let (src, dst) = pair(&mut qw.bufs, s, u);
                    timed(profile, "shortcut", || {
                        pw.run(n * oh * ow, src, ldq(c), dst, ldq(cout), team)
                    });
                    (u, Some(*res))
                }
                QShortcut::Identity(res) => (x, Some(*res)),
                QShortcut::None => (u, None),
            };
            let v = if t == p { r } else { p };
            let init2 = qb.g2.0.cout();
            {
                let (src, dst) = pair(&mut qw.bufs, t, v);
                timed(profile, "pointwise", || {
                    qb.g2.0.run(n * h * w, src, ldq(mid), dst, ldq(init2), team)
                });
            }
            {
                let (src, dst) = pair(&mut qw.bufs, v, target);
                timed(profile, "depthwise", || {
                    qb.g2.1.run(
                        Shape::new(n, h, w),
                        src,
                        ldq(init2),
                        dst,
                        ldq(cout),
                        res,
                        ring,
                        team,
                    )
                });
            }
            x = target;
            c = cout;
        }
        let fin = self.final_conv.cout();
        let [o, ..] = others(x);
        {
            let (src, dst) = pair(&mut qw.bufs, x, o);
            timed(profile, "pointwise", || {
                q.final_conv.run(n * h * w, src, ldq(c), dst, ldq(fin), team)
            });
        }
        let hw = h * w;
        let maps = &qw.bufs[o];
        let (zp, k) = (q.final_out.zp as i32, q.final_out.scale / hw as f32);
        timed(profile, "pool", || {
            for img in 0..n {
                let out = &mut pooled[img * fin..(img + 1) * fin];
                for (ch, v) in out.iter_mut().enumerate() {
                    let sum: i32 = (0..hw)
                        .map(|p| maps[(img * hw + p) * ldq(fin) + ch] as i32 - zp)
                        .sum();
                    *v = sum as f32 * k;
                }
            }
        });
    }
}

/// Squeeze-excite on a u8 map (quantization `q`), in place: the gates from the dequantized
/// channel means, then `q' = round((q − zp) · gate) + zp`.
fn squeeze_excite(se: &Se, q: Q, n: usize, hw: usize, buf: &mut [u8], ldc: usize, scratch: &mut [f32]) {
    let c = se.channels();
    let (g, hidden) = scratch.split_at_mut(c.next_multiple_of(16));
    let hidden = &mut hidden[..se.reduced()];
    for img in 0..n {
        let map = &mut buf[img * hw * ldc..][..hw * ldc];
        qmaps::dequantized_sums(map, ldc, q.zp, q.scale, &mut g[..c]);
        se.gates(&mut g[..c], hidden, hw);
        g[c..].fill(0.0);
        qmaps::scale_rows(map, ldc, g, c, q.zp);
    }
}
