//! A plain forward pass of the deploy-form network over its plan: direct convolution loops,
//! f64 sums, one image at a time, no packing and no SIMD. It is independent of the kernels,
//! and serves twice: calibration observes each quantization point of the float network, and
//! simulated quantization (quantize, then dequantize, at every point, with the weights an
//! INT8 file holds) is the reference the INT8 engine is tested against.

use std::collections::HashMap;

use repghost_plan::plan::{self, Plan};

use crate::act::Act;
use crate::error::{Error, Result};
use crate::model::{act, Tensors};

/// An NHWC map, rows `c` wide.
#[derive(Clone, Debug)]
pub struct Map {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub d: Vec<f32>,
}

/// A convolution with its deploy-form weight `[cout, cin / groups, k, k]` and bias.
pub(crate) struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    act: Act,
}

impl Conv {
    pub(crate) fn new(c: &plan::Conv, w: Vec<f32>, b: Vec<f32>) -> Conv {
        Conv {
            cin: c.cin,
            cout: c.cout,
            k: c.k,
            stride: c.stride,
            groups: c.groups,
            w,
            b,
            act: act(c.act),
        }
    }

    /// The conv of `x` (padding `k / 2`), its activation applied.
    pub(crate) fn run(&self, x: &Map) -> Map {
        assert_eq!(x.c, self.cin, "reference conv input channels");
        let (k, s, p) = (self.k, self.stride, self.k / 2);
        let oh = (x.h + 2 * p - k) / s + 1;
        let ow = (x.w + 2 * p - k) / s + 1;
        let (cg, og) = (self.cin / self.groups, self.cout / self.groups);
        let mut d = vec![0.0f32; oh * ow * self.cout];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..self.cout {
                    let g = o / og;
                    let mut acc = self.b[o] as f64;
                    for ky in 0..k {
                        let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&v| v < x.h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = (ox * s + kx).checked_sub(p).filter(|&v| v < x.w) else {
                                continue;
                            };
                            let px = &x.d[(iy * x.w + ix) * x.c + g * cg..][..cg];
                            for (i, &v) in px.iter().enumerate() {
                                acc += v as f64 * self.w[((o * cg + i) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    d[(oy * ow + ox) * self.cout + o] = self.act.apply(acc as f32);
                }
            }
        }
        Map {
            h: oh,
            w: ow,
            c: self.cout,
            d,
        }
    }
}

/// Where the forward pass offers a map to its observer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Point<'a> {
    /// The output of the conv with this key (for `ghost2.cheap`, after the residual add).
    Out(&'a str),
    /// The map of the conv with this key after squeeze-excite scaled it: quantized again with
    /// that conv's parameters (the gates lie in [0, 1], so the range does not grow).
    Rescaled(&'a str),
}

/// Where [`Net::new`] gets a conv's weight and bias.
pub(crate) type ConvSource<'a> = dyn FnMut(&plan::Conv) -> Result<(Vec<f32>, Vec<f32>)> + 'a;

/// The network's convolutions by key, and its plan.
pub(crate) struct Net {
    pub(crate) plan: Plan,
    convs: HashMap<String, Conv>,
}

impl Net {
    /// The deploy-form network of `plan`, its tensors read through `conv`, which returns a
    /// conv's weight and bias.
    pub(crate) fn new(plan: &Plan, conv: &mut ConvSource) -> Result<Net> {
        let mut convs = HashMap::new();
        for c in convs_of(plan)? {
            let (w, b) = conv(c)?;
            convs.insert(c.key.clone(), Conv::new(c, w, b));
        }
        Ok(Net {
            plan: plan.clone(),
            convs,
        })
    }

    /// From float deploy-form tensors.
    pub(crate) fn from_tensors(plan: &Plan, t: &dyn Tensors) -> Result<Net> {
        Net::new(plan, &mut |c| {
            let get = |key: String, shape: Vec<usize>| -> Result<Vec<f32>> {
                match t.get(&key)? {
                    Some((s, d)) if s == shape => Ok(d),
                    Some((s, _)) => Err(Error::Model(format!(
                        "tensor '{key}' is {s:?}, the model needs {shape:?}"
                    ))),
                    None => Err(Error::Model(format!("missing tensor '{key}' {shape:?}"))),
                }
            };
            let shape = if c.key == plan.classifier.key {
                vec![c.cout, c.cin]
            } else {
                c.weight_shape().to_vec()
            };
            Ok((
                get(format!("{}.weight", c.key), shape)?,
                get(format!("{}.bias", c.key), vec![c.cout])?,
            ))
        })
    }

    fn conv(&self, c: &plan::Conv) -> &Conv {
        &self.convs[&c.key]
    }

    /// Logits of one image (`x`, NHWC), offering every quantization point's map to `at`,
    /// which may change it.
    pub(crate) fn forward(&self, x: &Map, at: &mut dyn FnMut(Point, &mut Map)) -> Vec<f32> {
        let p = &self.plan;
        let mut x = self.conv(&p.stem).run(x);
        at(Point::Out(&p.stem.key), &mut x);
        for b in &p.blocks {
            let run = |c: &plan::Conv, m: &Map, at: &mut dyn FnMut(Point, &mut Map)| {
                let mut y = self.conv(c).run(m);
                at(Point::Out(&c.key), &mut y);
                y
            };
            let a = run(&b.ghost1.primary, &x, at);
            let mut y = run(&b.ghost1.cheap, &a, at);
            let mut last = &b.ghost1.cheap.key;
            if let Some(dw) = &b.conv_dw {
                y = run(dw, &y, at);
                last = &dw.key;
            }
            if let Some(se) = &b.se {
                self.squeeze_excite(se, &mut y);
                at(Point::Rescaled(last), &mut y);
            }
            let d = run(&b.ghost2.primary, &y, at);
            let mut e = self.conv(&b.ghost2.cheap).run(&d);
            let residual = match &b.shortcut {
                plan::Shortcut::None => None,
                plan::Shortcut::Identity => Some(x),
                plan::Shortcut::Projection { dw, pw } => {
                    let s = run(dw, &x, at);
                    Some(run(pw, &s, at))
                }
            };
            if let Some(r) = residual {
                e.d.iter_mut().zip(&r.d).for_each(|(e, &r)| *e += r);
            }
            at(Point::Out(&b.ghost2.cheap.key), &mut e);
            x = e;
        }
        let mut f = self.conv(&p.final_conv).run(&x);
        at(Point::Out(&p.final_conv.key), &mut f);
        let hidden = self.conv(&p.conv_head).run(&means(&f));
        self.conv(&p.classifier).run(&hidden).d
    }

    /// Squeeze-excite in place: channel means, reduce + ReLU, expand, hard sigmoid, scale.
    fn squeeze_excite(&self, se: &plan::Se, y: &mut Map) {
        let r = self.conv(&se.reduce).run(&means(y));
        let g = self.conv(&se.expand).run(&r);
        let gates: Vec<f32> = g.d.iter().map(|&v| (v + 3.0).clamp(0.0, 6.0) / 6.0).collect();
        for px in y.d.chunks_exact_mut(y.c) {
            px.iter_mut().zip(&gates).for_each(|(v, &g)| *v *= g);
        }
    }
}

/// The channel means of `m` (f64 sums), as a 1×1 map.
fn means(m: &Map) -> Map {
    let hw = (m.h * m.w) as f64;
    let d = (0..m.c)
        .map(|c| (m.d.iter().skip(c).step_by(m.c).map(|&v| v as f64).sum::<f64>() / hw) as f32)
        .collect();
    Map {
        h: 1,
        w: 1,
        c: m.c,
        d,
    }
}

/// Every conv of a plan the reference runs (GhostNet's concatenations excluded: the INT8
/// engine covers RepGhostNet).
pub(crate) fn convs_of(p: &Plan) -> Result<Vec<&plan::Conv>> {
    let mut out = vec![&p.stem];
    for b in &p.blocks {
        if b.ghost1.concat || b.ghost2.concat {
            return Err(Error::Model(format!(
                "'{}' concatenates its ghost branches (GhostNet): quantization covers RepGhostNet",
                b.key
            )));
        }
        out.extend([&b.ghost1.primary, &b.ghost1.cheap]);
        out.extend(&b.conv_dw);
        if let Some(se) = &b.se {
            out.extend([&se.reduce, &se.expand]);
        }
        out.extend([&b.ghost2.primary, &b.ghost2.cheap]);
        if let plan::Shortcut::Projection { dw, pw } = &b.shortcut {
            out.extend([&**dw, &**pw]);
        }
    }
    out.extend([&p.final_conv, &p.conv_head, &p.classifier]);
    Ok(out)
}

/// The image `x` (`c × h × w` NCHW, or NHWC) as an NHWC map.
pub(crate) fn image(x: &[f32], c: usize, h: usize, w: usize, nchw: bool) -> Map {
    let d = if nchw {
        let mut d = vec![0.0; c * h * w];
        for ch in 0..c {
            for p in 0..h * w {
                d[p * c + ch] = x[ch * h * w + p];
            }
        }
        d
    } else {
        x.to_vec()
    };
    Map { h, w, c, d }
}
