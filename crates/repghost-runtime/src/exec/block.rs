//! One bottleneck: depth-first in strips of rows (`depth.rs`) where its maps are large, else
//! layer by layer through the workspace's buffers, with residual adds accumulated in place.

use std::sync::Mutex;

use super::ld;
use super::workspace::{Slot, Workspace};
use crate::depth::{Chain, Op, Residual};
use crate::kernels::depthwise::{Depthwise, Shape};
use crate::kernels::pointwise::Pointwise;
use crate::kernels::View;
use crate::model::{Block, Ghost, Shortcut};
use crate::profile::timed;

/// The chains a RepGhost bottleneck on an `h × w` input runs depth-first: the whole block, or
/// (with SE, which needs the mean of the whole map) the part before SE and the part after.
/// `None`: the block runs layer by layer (GhostNet's concatenations).
pub(crate) fn chains(b: &Block, h: usize, w: usize) -> Option<(Chain<'_>, Option<Chain<'_>>)> {
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

/// A map in the workspace: its buffer, shape and channels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Map {
    pub slot: Slot,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// One bottleneck of `n` images on the map `x`; returns its output map.
pub(crate) fn block(b: &Block, ws: &mut Workspace, x: Map, n: usize) -> Map {
    let (h, w, cin) = (x.h, x.w, x.c);
    if n == 1 {
        if let Some(c) = chains(b, h, w) {
            let (oh, ow, cout) = c.1.unwrap_or(c.0).out_dims();
            if oh * ow >= ws.depth_first_min {
                let slot = block_depth_first(b, c, ws, x);
                return Map {
                    slot,
                    h: oh,
                    w: ow,
                    c: cout,
                };
            }
        }
    }
    let [p, q, r, s] = x.slot.others::<4>();
    let mid = b.ghost1.out_channels();
    ghost(&b.ghost1, ws, x.slot, cin, p, q, Shape::new(n, h, w), false);
    let (mut t, mut oh, mut ow) = (q, h, w);
    if let Some(dw) = &b.dw {
        let (src, dst) = ws.bufs.pair(q, p);
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
        let (buf, scratch, team) = (ws.bufs.get_mut(t), &mut ws.scratch, ws.team.as_ref());
        timed(&mut ws.profile, "se", || {
            se.run(n, oh * ow, buf, ld(mid), scratch, team)
        });
    }
    let cout = b.ghost2.out_channels();
    // The residual is summed in place: ghost2 accumulates into the buffer that holds it.
    let (target, accumulate) = match &b.shortcut {
        Shortcut::Proj { dw, pw } => {
            projection(dw, pw, ws, [x.slot, r, s], Shape::new(n, h, w), cin, cout);
            (s, true)
        }
        Shortcut::Identity => (x.slot, true),
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
    Map {
        slot: target,
        h: oh,
        w: ow,
        c: cout,
    }
}

/// A bottleneck run depth-first: the shortcut first (a projection, layer by layer, into the
/// output buffer), then the chains. Returns where its output went.
fn block_depth_first(
    b: &Block,
    (first, second): (Chain<'_>, Option<Chain<'_>>),
    ws: &mut Workspace,
    x: Map,
) -> Slot {
    let [p, r, s] = x.slot.others::<3>();
    let (oh, ow, cout) = second.unwrap_or(first).out_dims();
    let residual = match &b.shortcut {
        Shortcut::Proj { dw, pw } => {
            projection(dw, pw, ws, [x.slot, r, s], Shape::new(1, x.h, x.w), x.c, cout);
            Residual::InPlace
        }
        Shortcut::Identity => Residual::Add(&[]),
        Shortcut::None => Residual::None,
    };
    let [s0, s1] = &mut ws.strips;
    let strips = [Mutex::new(s0.get_mut()), Mutex::new(s1.get_mut())];
    let team = ws.team.as_ref();
    let (input, mid, out) = ws.bufs.three(x.slot, p, s);
    let residual = match residual {
        Residual::Add(_) => Residual::Add(input),
        r => r,
    };
    match second {
        None => first.run(input, x.c, out, residual, &strips, team, &mut ws.profile),
        Some(second) => {
            let c = first.out_dims().2;
            first.run(input, x.c, mid, Residual::None, &strips, team, &mut ws.profile);
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

/// A projected shortcut, layer by layer: the depthwise conv of `x` (`cin` channels of shape
/// `s`) into `tmp`, then the 1×1 conv into `out` (`cout` channels), where the block's last
/// layer adds onto it.
fn projection(
    dw: &Depthwise,
    pw: &Pointwise,
    ws: &mut Workspace,
    [x, tmp, out]: [Slot; 3],
    s: Shape,
    cin: usize,
    cout: usize,
) {
    let (oh, ow) = dw.out_hw(s.h, s.w);
    let (src, dst) = ws.bufs.pair(x, tmp);
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
    let (src, dst) = ws.bufs.pair(tmp, out);
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

/// A ghost module from `src` (`cin` channels) into `dst`, through `tmp`.
fn ghost(
    g: &Ghost,
    ws: &mut Workspace,
    src: Slot,
    cin: usize,
    tmp: Slot,
    dst: Slot,
    s: Shape,
    accumulate: bool,
) {
    let m = s.n * s.h * s.w;
    let init = g.primary.cout();
    let out = g.out_channels();
    let threads = ws.team.as_ref();
    {
        let (a, b) = ws.bufs.pair(src, tmp);
        timed(&mut ws.profile, "pointwise", || {
            g.primary
                .run(m, View::new(a, ld(cin), 0), b, ld(init), 0, false, threads)
        });
    }
    let (a, b) = ws.bufs.pair(tmp, dst);
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
