//! The deploy-form network as this engine holds it. Its structure comes from the
//! [`Plan`] of the configuration stored with the weights (`repghost convert` writes it), never
//! from the tensor names: every layer's tensors are looked up under the plan's keys and must
//! have the plan's shapes, and a tensor no layer reads is refused.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use repghost_plan::plan::{self, Act as PlanAct};
use repghost_plan::{Activation, NetConfig, Plan};
use safetensors::SafeTensors;

use crate::act::Act;
use crate::error::{Error, Result};
use crate::kernels::depthwise::Depthwise;
use crate::kernels::pointwise::Pointwise;
use crate::kernels::se::Se;
use crate::kernels::stem::Stem;
use crate::quant::engine::QNet;
use crate::quant::format::{Int8File, INT8};

/// A ghost module: `primary` 1×1 conv, then the `cheap` depthwise conv on its output, joined
/// by addition (RepGhost, already folded into `cheap`) or by concatenation (GhostNet).
pub(crate) struct Ghost {
    pub(crate) primary: Pointwise,
    pub(crate) cheap: Depthwise,
    /// GhostNet: output channels of the concatenation (primary ++ cheap, sliced).
    pub(crate) concat: Option<usize>,
}

impl Ghost {
    pub fn out_channels(&self) -> usize {
        self.concat.unwrap_or(self.cheap.channels())
    }
    /// Whether the module reads `cin` channels and its cheap op covers what it keeps: the
    /// cheap op convolves the primary conv's output, and GhostNet's concatenation keeps all
    /// of the primary channels and a part of the cheap ones.
    fn fits(&self, cin: usize) -> bool {
        let init = self.primary.cout();
        self.primary.cin() == cin
            && self.cheap.channels() == init
            && self.cheap.stride() == 1
            && self.concat.is_none_or(|out| out >= init && out - init <= init)
    }
}

pub(crate) enum Shortcut {
    /// The "wo" ablation: no identity path.
    None,
    Identity,
    Proj {
        dw: Depthwise,
        pw: Pointwise,
    },
}

pub(crate) struct Block {
    pub(crate) ghost1: Ghost,
    pub(crate) dw: Option<Depthwise>,
    pub(crate) se: Option<Se>,
    pub(crate) ghost2: Ghost,
    pub(crate) shortcut: Shortcut,
}

/// A loaded network. `Send + Sync`: run it from many threads, each with its own workspace.
pub struct Model {
    pub(crate) name: String,
    pub(crate) in_chans: usize,
    pub(crate) num_classes: usize,
    pub(crate) stem: Stem,
    pub(crate) blocks: Vec<Block>,
    /// Blocks whose outputs are the stride-8, -16 and -32 feature maps.
    pub(crate) taps: [usize; 3],
    pub(crate) final_conv: Pointwise,
    pub(crate) conv_head: Pointwise,
    pub(crate) classifier: Pointwise,
    /// The plan the model was built from: layer names and geometry.
    pub(crate) plan: Plan,
    /// An INT8 file's layers, which `run` computes with (the float layers above then hold
    /// the dequantized weights, and compute `features`).
    pub(crate) quant: Option<Box<QNet>>,
}

/// Where [`Model::from_plan`] finds the deploy-form tensors.
pub trait Tensors {
    /// The shape and values stored under `key`; `Ok(None)` where there is no such tensor.
    fn get(&self, key: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;
    /// Every key held, so that tensors no layer reads can be refused.
    fn keys(&self) -> Vec<String>;
}

impl Tensors for SafeTensors<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Ok(v) = self.tensor(key) else {
            return Ok(None);
        };
        let b = v.data();
        let data = match v.dtype() {
            safetensors::Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            // Half the file; computed in f32 like any other.
            safetensors::Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| crate::f16::to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            d => {
                return Err(Error::Model(format!(
                    "tensor '{key}' is {d:?}, expected F32 or F16"
                )))
            }
        };
        Ok(Some((v.shape().to_vec(), data)))
    }

    fn keys(&self) -> Vec<String> {
        self.names().into_iter().map(str::to_string).collect()
    }
}

/// The source's tensors as the plan asks for them, and the keys it has asked for.
struct Reader<'a> {
    src: &'a dyn Tensors,
    used: RefCell<BTreeSet<String>>,
}

impl Reader<'_> {
    /// The tensor under `key`, which must have `shape` and finite values.
    fn get(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.used.borrow_mut().insert(key.to_string());
        let (got, data) = self
            .src
            .get(key)?
            .ok_or_else(|| Error::Model(format!("missing tensor '{key}' {shape:?}")))?;
        if got != shape {
            return Err(Error::Model(format!(
                "tensor '{key}' is {got:?}, the model needs {shape:?}"
            )));
        }
        if data.iter().any(|x| !x.is_finite()) {
            return Err(Error::Model(format!(
                "tensor '{key}' holds NaN or infinite values"
            )));
        }
        Ok(data)
    }

    /// A deploy-form conv: `{key}.weight` and `{key}.bias`.
    fn conv(&self, c: &plan::Conv) -> Result<(Vec<f32>, Vec<f32>)> {
        let w = self.get(&format!("{}.weight", c.key), &c.weight_shape())?;
        let b = self.get(&format!("{}.bias", c.key), &[c.cout])?;
        Ok((w, b))
    }

    fn pointwise(&self, c: &plan::Conv) -> Result<Pointwise> {
        if c.k != 1 || c.stride != 1 || c.groups != 1 {
            return Err(Error::Model(format!("'{}' is not a 1x1 conv", c.key)));
        }
        let (w, b) = self.conv(c)?;
        Pointwise::new(&w, c.cout, c.cin, b, act(c.act)).map_err(|e| in_layer(&c.key, e))
    }

    fn depthwise(&self, c: &plan::Conv) -> Result<Depthwise> {
        if c.groups != c.cin || c.cin != c.cout {
            return Err(Error::Model(format!("'{}' is not a depthwise conv", c.key)));
        }
        let (w, b) = self.conv(c)?;
        Depthwise::new(&w, c.cout, c.k, c.stride, b, act(c.act)).map_err(|e| in_layer(&c.key, e))
    }

    fn ghost(&self, g: &plan::Ghost) -> Result<Ghost> {
        Ok(Ghost {
            primary: self.pointwise(&g.primary)?,
            cheap: self.depthwise(&g.cheap)?,
            concat: g.concat.then_some(g.out),
        })
    }

    fn block(&self, b: &plan::Block) -> Result<Block> {
        let se = match &b.se {
            Some(se) => {
                let (w1, b1) = self.conv(&se.reduce)?;
                let (w2, b2) = self.conv(&se.expand)?;
                let (c, r) = (se.reduce.cin, se.reduce.cout);
                if se.expand.cin != r || se.expand.cout != c {
                    return Err(Error::Model(format!(
                        "'{}.se' convs do not fit each other",
                        b.key
                    )));
                }
                Some(Se::new(&w1, b1, &w2, b2, c, r).map_err(|e| in_layer(&format!("{}.se", b.key), e))?)
            }
            None => None,
        };
        Ok(Block {
            ghost1: self.ghost(&b.ghost1)?,
            dw: b.conv_dw.as_ref().map(|c| self.depthwise(c)).transpose()?,
            se,
            ghost2: self.ghost(&b.ghost2)?,
            shortcut: match &b.shortcut {
                plan::Shortcut::None => Shortcut::None,
                plan::Shortcut::Identity => Shortcut::Identity,
                plan::Shortcut::Projection { dw, pw } => Shortcut::Proj {
                    dw: self.depthwise(dw)?,
                    pw: self.pointwise(pw)?,
                },
            },
        })
    }

    /// The names no layer read, for the error that reports them.
    fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut names: Vec<String> = self
            .src
            .keys()
            .into_iter()
            .filter(|n| !used.contains(n))
            .collect();
        names.sort();
        names
    }
}

pub(crate) fn act(a: PlanAct) -> Act {
    match a {
        PlanAct::None => Act::None,
        PlanAct::Relu | PlanAct::Module(Activation::Relu) => Act::Relu,
        PlanAct::Module(Activation::Relu6) => Act::Relu6,
        PlanAct::Module(Activation::LeakyRelu) => Act::LeakyRelu,
        PlanAct::Module(Activation::HardSwish) => Act::HardSwish,
    }
}

/// Prefixes a kernel constructor's message with the layer's key.
fn in_layer(prefix: &str, e: Error) -> Error {
    match e {
        Error::Model(m) => Error::Model(format!("'{prefix}': {m}")),
        e => e,
    }
}

/// Up to three names and the count: a message stays one short line however many there are.
pub(crate) fn few(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    match names.len() {
        n if n <= 3 => shown.join(", "),
        n => format!("{} and {} more", shown.join(", "), n - 3),
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
        Model::from_bytes(&bytes).map_err(|e| match e {
            Error::Model(m) => Error::Model(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// From the bytes of a native deploy-form safetensors file: the configuration in its
    /// metadata gives the plan, the tensors fill it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let bad = |m: String| Error::Model(m);
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some("repghost") {
            return Err(bad(
                "no repghost metadata: write deploy weights with `repghost convert`".into(),
            ));
        }
        if meta.get("form").map(String::as_str) != Some("deploy") {
            return Err(bad(format!(
                "holds {} weights; the runtime runs the deploy form (`repghost convert` writes it)",
                meta.get("form").map_or("unknown", String::as_str)
            )));
        }
        let config = meta
            .get("config")
            .ok_or_else(|| bad("metadata lacks 'config'".into()))?;
        let cfg: NetConfig = serde_json::from_str(config)
            .map_err(|e| bad(format!("metadata 'config' is not a network configuration ({e})")))?;
        check_config(&cfg)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let name = meta.get("model").map_or("", String::as_str);
        let plan = Plan::new(&cfg);
        match meta.get("precision").map(String::as_str) {
            None | Some("f32") => Model::from_plan(&plan, name, &st),
            Some(INT8) => {
                crate::quant::reference::convs_of(&plan)?;
                let file = Int8File::new(st, &plan);
                let mut m = Model::from_plan(&plan, name, &file)?;
                m.quant = Some(Box::new(QNet::new(&plan, &file, &m)?));
                Ok(m)
            }
            Some(p) => Err(bad(format!(
                "metadata names precision '{p}'; the runtime runs f32 and int8"
            ))),
        }
    }

    /// The network `plan` describes, its deploy-form tensors read from `tensors`: each must
    /// have the plan's shape, and every tensor must belong to a layer.
    pub fn from_plan(plan: &Plan, name: &str, tensors: &dyn Tensors) -> Result<Model> {
        let t = Reader {
            src: tensors,
            used: RefCell::default(),
        };
        let s = &plan.stem;
        let (w, b) = t.conv(s)?;
        let stem = Stem::new(&w, s.cout, s.cin, s.k, s.stride, b).map_err(|e| in_layer(&s.key, e))?;
        let blocks = plan
            .blocks
            .iter()
            .map(|b| t.block(b))
            .collect::<Result<Vec<_>>>()?;
        let final_conv = t.pointwise(&plan.final_conv)?;
        let conv_head = t.pointwise(&plan.conv_head)?;
        let c = &plan.classifier;
        let cw = t.get(&format!("{}.weight", c.key), &[c.cout, c.cin])?;
        let cb = t.get(&format!("{}.bias", c.key), &[c.cout])?;
        let classifier =
            Pointwise::new(&cw, c.cout, c.cin, cb, Act::None).map_err(|e| in_layer(&c.key, e))?;
        let unused = t.unused();
        if !unused.is_empty() {
            return Err(Error::Model(format!(
                "{} tensor(s) that no layer of {} reads: {}",
                unused.len(),
                if name.is_empty() { "the model" } else { name },
                few(&unused)
            )));
        }
        let taps = plan.taps.map(|tap| tap.block);
        if taps.iter().any(|&i| i >= blocks.len()) {
            return Err(Error::Model("a feature tap names a block the plan lacks".into()));
        }
        let m = Model {
            name: name.to_string(),
            in_chans: stem.cin(),
            num_classes: c.cout,
            stem,
            blocks,
            taps,
            final_conv,
            conv_head,
            classifier,
            plan: plan.clone(),
            quant: None,
        };
        m.check_channels()?;
        Ok(m)
    }

    /// Every layer reads the channels its predecessor writes, and the strided blocks sit
    /// where the feature taps expect them.
    fn check_channels(&self) -> Result<()> {
        let mut ch = self.stem.cout();
        for (i, b) in self.blocks.iter().enumerate() {
            let err = |what: &str| Err(Error::Model(format!("block {i}: {what} does not fit its input")));
            if !b.ghost1.fits(ch) {
                return err("ghost1");
            }
            let mid = b.ghost1.out_channels();
            if b.dw.as_ref().is_some_and(|d| d.channels() != mid)
                || b.se.as_ref().is_some_and(|s| s.channels() != mid)
            {
                return err("conv_dw/se");
            }
            if !b.ghost2.fits(mid) {
                return err("ghost2");
            }
            let out = b.ghost2.out_channels();
            match &b.shortcut {
                Shortcut::Proj { dw, pw } if dw.channels() != ch || pw.cin() != ch || pw.cout() != out => {
                    return err("shortcut")
                }
                Shortcut::Proj { dw, .. } if dw.stride() != b.dw.as_ref().map_or(1, |d| d.stride()) => {
                    return err("shortcut stride")
                }
                Shortcut::Identity if out != ch || b.dw.is_some() => return err("identity shortcut"),
                _ => {}
            }
            ch = out;
        }
        if self.final_conv.cin() != ch || self.conv_head.cin() != self.final_conv.cout() {
            return Err(Error::Model("final conv / conv_head do not fit".into()));
        }
        Ok(())
    }

    /// The model's name (the `model` metadata of its file).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan of layers this model runs (the deploy form of its configuration).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `int8` for a model whose convolutions run the INT8 kernels, else `f32`.
    pub fn precision(&self) -> &'static str {
        if self.quant.is_some() {
            INT8
        } else {
            "f32"
        }
    }

    /// Channels of the input image.
    pub fn in_chans(&self) -> usize {
        self.in_chans
    }

    /// Logits per image.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// A one-line description.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} blocks, {} classes)",
            self.name,
            self.blocks.len(),
            self.num_classes
        )
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Model({})", self.summary())
    }
}

/// A configuration whose plan this engine can hold: the checks come before any plan is made,
/// so that absurd numbers in a file's metadata cannot reach the arithmetic of the plan.
pub(crate) fn check_config(cfg: &NetConfig) -> Result<()> {
    let fits = cfg.width.is_finite()
        && cfg.width > 0.0
        && cfg.width <= 8.0
        && (1..=64).contains(&cfg.in_chans)
        && (1..=1 << 20).contains(&cfg.num_classes)
        && (cfg.stem_stride == 1 || cfg.stem_stride == 2);
    if fits {
        Ok(())
    } else {
        Err(Error::Model(format!(
            "metadata 'config' describes no network this engine runs (width {}, {} input channels, {} classes, stem stride {})",
            cfg.width, cfg.in_chans, cfg.num_classes, cfg.stem_stride
        )))
    }
}
