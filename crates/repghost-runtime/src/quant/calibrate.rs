//! Static post-training quantization: the float network observed on calibration images,
//! then its weights and activation ranges written as an INT8 file; and the simulated
//! quantization of an INT8 file, the reference its engine is tested against.

use std::collections::{BTreeMap, HashMap};

use repghost_plan::{NetConfig, Plan};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use super::format::{self, f32_raw, Int8File, Raw, INT8};
use super::observe::{params, Clip, Observed};
use super::reference::{convs_of, image, Map, Net, Point};
use crate::error::{Error, Result};
use crate::exec::Layout;
use crate::kernels::requant::quantize;
use crate::model::{Model, Tensors};

/// How [`Calibrator::quantize`] quantizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantizeOptions {
    /// The activations' clipping rule.
    pub clip: Clip,
    /// One weight scale per output channel (else one per layer).
    pub per_channel: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            clip: Clip::Percentile { lower: 0.01 },
            per_channel: true,
        }
    }
}

/// The metadata and plan of a native deploy-form file, refused unless its precision is
/// `want` (`None`: float).
fn header<'a>(
    bytes: &'a [u8],
    want: Option<&str>,
) -> Result<(HashMap<String, String>, Plan, SafeTensors<'a>)> {
    let bad = |m: String| Error::Model(m);
    let (_, h) =
        SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = h.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some("repghost")
        || meta.get("form").map(String::as_str) != Some("deploy")
    {
        return Err(bad(
            "not deploy-form repghost weights (`repghost convert` writes them)".into(),
        ));
    }
    let precision = meta.get("precision").map(String::as_str);
    if precision != want {
        return Err(bad(format!(
            "holds {} weights, expected {}",
            precision.unwrap_or("f32"),
            want.unwrap_or("f32")
        )));
    }
    let cfg: NetConfig = serde_json::from_str(meta.get("config").map_or("", String::as_str))
        .map_err(|e| bad(format!("metadata 'config' is not a network configuration ({e})")))?;
    crate::model::check_config(&cfg)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    Ok((meta, Plan::new(&cfg), st))
}

/// Observes a float deploy-form network on calibration images.
pub struct Calibrator {
    pub(super) net: Net,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    meta: HashMap<String, String>,
    seen: HashMap<String, Observed>,
    images: usize,
}

impl Calibrator {
    /// From the bytes of a float deploy-form file (`repghost convert` writes one).
    pub fn from_bytes(bytes: &[u8]) -> Result<Calibrator> {
        let (meta, plan, st) = header(bytes, None)?;
        // The engine's own loader checks every shape and refuses tensors no layer reads.
        Model::from_plan(&plan, "", &st)?;
        convs_of(&plan)?;
        let net = Net::from_tensors(&plan, &st)?;
        let mut tensors = BTreeMap::new();
        for k in st.names() {
            if let Some(t) = Tensors::get(&st, k)? {
                tensors.insert(k.to_string(), t);
            }
        }
        Ok(Calibrator {
            net,
            tensors,
            meta,
            seen: HashMap::new(),
            images: 0,
        })
    }

    /// Channels of the input images.
    pub fn in_chans(&self) -> usize {
        self.net.plan.config.in_chans
    }

    /// Images observed so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Runs the float network on `n` images of `h × w` (normalized, as for inference) and
    /// records the values at every quantization point; the images are shared between the
    /// machine's cores.
    pub fn observe(&mut self, batch: &[f32], n: usize, h: usize, w: usize, layout: Layout) -> Result<()> {
        let c = self.in_chans();
        if n == 0 || h == 0 || w == 0 || batch.len() != n * c * h * w {
            return Err(Error::Input(format!(
                "calibration batch has {} values, {n}x{c}x{h}x{w} expected",
                batch.len()
            )));
        }
        if batch.iter().any(|v| !v.is_finite()) {
            return Err(Error::Input(
                "calibration batch holds NaN or infinite values".into(),
            ));
        }
        let per = c * h * w;
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n);
        let net = &self.net;
        let parts: Vec<HashMap<String, Observed>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut seen: HashMap<String, Observed> = HashMap::new();
                        for i in (t..n).step_by(threads) {
                            let x = image(&batch[i * per..(i + 1) * per], c, h, w, layout == Layout::Nchw);
                            net.forward(&x, &mut |p, m: &mut Map| {
                                if let Point::Out(key) = p {
                                    seen.entry(key.to_string())
                                        .or_insert_with(Observed::new)
                                        .add(&m.d);
                                }
                            });
                        }
                        seen
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("calibration thread"))
                .collect()
        });
        for part in parts {
            for (k, o) in part {
                match self.seen.get_mut(&k) {
                    Some(s) => s.merge(&o),
                    None => {
                        self.seen.insert(k, o);
                    }
                }
            }
        }
        self.images += n;
        Ok(())
    }

    /// The INT8 file of the network: s8 weights with their scales, and each quantization
    /// point's scale and zero point from the values observed.
    pub fn quantize(&self, opts: &QuantizeOptions) -> Result<Vec<u8>> {
        if self.images == 0 {
            return Err(Error::Input("no calibration images observed".into()));
        }
        let plan = &self.net.plan;
        let quantized: Vec<&str> = format::quantized(plan).iter().map(|c| c.key.as_str()).collect();
        let mut out: BTreeMap<String, Raw> = BTreeMap::new();
        for (k, (shape, v)) in &self.tensors {
            out.insert(k.clone(), f32_raw(shape.clone(), v));
        }
        for key in &quantized {
            let wkey = format!("{key}.weight");
            let (shape, w) = &self.tensors[&wkey];
            let (q, s) = quantize_weight(w, shape[0], opts.per_channel);
            out.insert(
                wkey,
                (Dtype::I8, shape.clone(), q.iter().map(|&v| v as u8).collect()),
            );
            out.insert(format!("{key}.weight_scale"), f32_raw(vec![shape[0]], &s));
        }
        for key in std::iter::once(plan.stem.key.as_str()).chain(quantized.iter().copied()) {
            let o = self
                .seen
                .get(key)
                .ok_or_else(|| Error::Model(format!("no calibration values at '{key}'")))?;
            let (lo, hi) = o.range(opts.clip);
            let (s, zp) = params(lo, hi);
            out.insert(format!("{key}.output_scale"), f32_raw(vec![1], &[s]));
            out.insert(format!("{key}.output_zero_point"), (Dtype::U8, vec![1], vec![zp]));
        }
        let mut meta = self.meta.clone();
        meta.insert("precision".into(), INT8.into());
        meta.insert(
            "quantization".into(),
            serde_json::json!({
                "activations": "u8, per tensor",
                "weights": if opts.per_channel { "s8, per output channel" } else { "s8, per layer" },
                "clip": opts.clip.name(),
                "calibration_images": self.images,
            })
            .to_string(),
        );
        format::write(&out, meta)
    }
}

/// Symmetric s8 weights `[cout, …]` in [-127, 127] and their scales, per output channel or
/// one for all.
fn quantize_weight(w: &[f32], cout: usize, per_channel: bool) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / cout;
    let absmax = |v: &[f32]| v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scales: Vec<f32> = if per_channel {
        w.chunks_exact(per).map(absmax).collect()
    } else {
        vec![absmax(w); cout]
    };
    let scales: Vec<f32> = scales
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[i / per]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Simulated quantization of an INT8 file: the reference forward pass on its dequantized
/// weights, every quantization point quantized and dequantized with the file's parameters.
pub struct Simulator {
    pub(super) net: Net,
    points: HashMap<String, (f32, u8)>,
}

impl Simulator {
    pub fn from_bytes(bytes: &[u8]) -> Result<Simulator> {
        let (_, plan, st) = header(bytes, Some(INT8))?;
        let file = Int8File::new(st, &plan);
        let mut points = HashMap::new();
        for key in std::iter::once(&plan.stem)
            .chain(format::quantized(&plan))
            .map(|c| &c.key)
        {
            points.insert(key.clone(), file.output(key)?);
        }
        // A quantized conv's bias is rounded to a multiple of `s_in · s_w[o]`, as the
        // engine's i32 bias holds it.
        let inputs = format::inputs(&plan);
        let net = Net::new(&plan, &mut |c| {
            let shape = if c.key == plan.classifier.key {
                vec![c.cout, c.cin]
            } else {
                c.weight_shape().to_vec()
            };
            let w = Tensors::get(&file, &format!("{}.weight", c.key))?
                .map(|t| t.1)
                .unwrap_or_default();
            let mut b = file.f32(&format!("{}.bias", c.key), &[c.cout])?;
            if w.len() != shape.iter().product::<usize>() {
                return Err(Error::Model(format!(
                    "tensor '{}.weight' is not {shape:?}",
                    c.key
                )));
            }
            if let Some(input) = inputs.get(&c.key) {
                let (s_in, _) = points[input];
                let (_, ws) = file.weight(c)?;
                for (o, b) in b.iter_mut().enumerate() {
                    let sacc = s_in * ws[o];
                    *b = ((*b as f64 / sacc as f64).round() * sacc as f64) as f32;
                }
            }
            Ok((w, b))
        })?;
        Ok(Simulator { net, points })
    }

    /// Logits of one `c × h × w` image.
    pub fn logits(&self, x: &[f32], h: usize, w: usize, layout: Layout) -> Result<Vec<f32>> {
        let c = self.net.plan.config.in_chans;
        if x.len() != c * h * w {
            return Err(Error::Input(format!(
                "image has {} values, {c}x{h}x{w} expected",
                x.len()
            )));
        }
        let x = image(x, c, h, w, layout == Layout::Nchw);
        Ok(self
            .net
            .forward(&x, &mut |p, m: &mut Map| self.fake_quantize(p, m)))
    }

    /// `m` quantized and dequantized with the parameters of point `p`.
    pub(super) fn fake_quantize(&self, p: Point, m: &mut Map) {
        let (Point::Out(key) | Point::Rescaled(key)) = p;
        let (s, zp) = self.points[key];
        let (inv, zp) = (1.0 / s, zp as i32);
        m.d.iter_mut()
            .for_each(|v| *v = (quantize(*v, inv, zp) as i32 - zp) as f32 * s);
    }
}

/// A tensor's key, shape and values.
pub type FloatTensor = (String, Vec<usize>, Vec<f32>);

/// The float deploy-form tensors of an INT8 file (weights dequantized, `q · scale`), for a
/// framework that computes in float; its quantization parameters are left out.
pub fn dequantize(bytes: &[u8]) -> Result<Vec<FloatTensor>> {
    let (_, plan, st) = header(bytes, Some(INT8))?;
    let file = Int8File::new(st, &plan);
    let mut out = Vec::new();
    for k in file.keys() {
        if let Some((shape, d)) = Tensors::get(&file, &k)? {
            out.push((k, shape, d));
        }
    }
    Ok(out)
}

/// Whether `bytes` are a safetensors file whose metadata says `precision=int8`.
pub fn is_int8(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, h)| h.metadata().as_ref().and_then(|m| m.get("precision").cloned()))
        .as_deref()
        == Some(INT8)
}
