//! The deploy-form network as this engine holds it, built from native deploy safetensors
//! (as written by `repghost convert`). The structure is read from the tensor names and
//! shapes: a bottleneck is strided exactly when it has a `conv_dw`, has SE when it has
//! `se.*`, and projects its shortcut when it has `shortcut.*`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use safetensors::SafeTensors;

use crate::act::Act;
use crate::error::{Error, Result};
use crate::kernels::depthwise::Depthwise;
use crate::kernels::pointwise::Pointwise;
use crate::kernels::se::Se;
use crate::kernels::stem::Stem;

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
    /// Index of the last block of each stage.
    pub(crate) stage_ends: Vec<usize>,
    pub(crate) final_conv: Pointwise,
    pub(crate) conv_head: Pointwise,
    pub(crate) classifier: Pointwise,
}

/// Stages whose outputs are the stride-8, -16 and -32 maps (timm `feature_info`).
pub(crate) const FEATURE_STAGES: [usize; 3] = [3, 5, 7];

/// Stages of bottlenecks (`blocks.0` to `blocks.8`; `blocks.9` is the final conv).
const STAGES: usize = 9;

/// The file's tensors, and the names the loader has read (every tensor must be read: one that
/// is not belongs to a structure this engine does not know).
struct Tensors<'a> {
    st: SafeTensors<'a>,
    used: RefCell<BTreeSet<String>>,
}

impl Tensors<'_> {
    fn has(&self, k: &str) -> bool {
        self.st.tensor(k).is_ok()
    }
    fn get(&self, k: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.used.borrow_mut().insert(k.to_string());
        let v = self
            .st
            .tensor(k)
            .map_err(|_| Error::Model(format!("missing tensor '{k}'")))?;
        if v.dtype() != safetensors::Dtype::F32 {
            return Err(Error::Model(format!(
                "tensor '{k}' is {:?}, expected F32",
                v.dtype()
            )));
        }
        let data: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if data.iter().any(|x| !x.is_finite()) {
            return Err(Error::Model(format!("tensor '{k}' holds NaN or infinite values")));
        }
        Ok((data, v.shape().to_vec()))
    }
    /// A conv weight `[o, i, k, k]` and its bias `[o]`.
    fn conv(&self, prefix: &str) -> Result<(Vec<f32>, [usize; 4], Vec<f32>)> {
        let (w, s) = self.get(&format!("{prefix}.weight"))?;
        let shape: [usize; 4] = s
            .as_slice()
            .try_into()
            .map_err(|_| Error::Model(format!("'{prefix}.weight' is not 4-d: {s:?}")))?;
        let (b, bs) = self.get(&format!("{prefix}.bias"))?;
        if bs != [shape[0]] || shape[2] != shape[3] {
            return Err(Error::Model(format!(
                "'{prefix}' has weight {s:?} and bias {bs:?}"
            )));
        }
        Ok((w, shape, b))
    }
    fn pointwise(&self, prefix: &str, act: Act) -> Result<Pointwise> {
        let (w, s, b) = self.conv(prefix)?;
        if s[2] != 1 {
            return Err(Error::Model(format!("'{prefix}' should be 1x1, is {s:?}")));
        }
        Pointwise::new(&w, s[0], s[1], b, act).map_err(|e| in_layer(prefix, e))
    }
    fn depthwise(&self, prefix: &str, stride: usize, act: Act) -> Result<Depthwise> {
        let (w, s, b) = self.conv(prefix)?;
        if s[1] != 1 || !(s[2] == 3 || s[2] == 5) {
            return Err(Error::Model(format!(
                "'{prefix}' should be depthwise 3x3 or 5x5, is {s:?}"
            )));
        }
        Depthwise::new(&w, s[0], s[2], stride, b, act).map_err(|e| in_layer(prefix, e))
    }

    /// The names no layer read, for the error that reports them.
    fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        let mut names: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|n| !used.contains(*n))
            .map(|n| n.to_string())
            .collect();
        names.sort();
        names
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
        let cfg: serde_json::Value = serde_json::from_str(meta.get("config").map_or("{}", String::as_str))
            .map_err(|e| bad(format!("metadata 'config' is not JSON ({e})")))?;
        let ghostnet = cfg["arch"].as_str() == Some("ghost");
        let act = Act::from_name(cfg["act"].as_str().unwrap_or("relu"))
            .ok_or_else(|| bad(format!("unknown activation {}", cfg["act"])))?;
        let shortcut = cfg["shortcut"].as_bool().unwrap_or(true);
        let stem_stride = cfg["stem_stride"].as_u64().unwrap_or(2) as usize;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let t = Tensors {
            st,
            used: RefCell::default(),
        };

        let (w, s, b) = t.conv("conv_stem")?;
        let stem = Stem::new(&w, s[0], s[1], s[2], stem_stride, b).map_err(|e| in_layer("conv_stem", e))?;
        let mut blocks = Vec::new();
        let mut stage_ends = Vec::new();
        let mut stage = 0;
        while t.has(&format!("blocks.{stage}.0.ghost1.primary_conv.0.weight")) {
            let mut j = 0;
            loop {
                let p = format!("blocks.{stage}.{j}");
                if !t.has(&format!("{p}.ghost1.primary_conv.0.weight")) {
                    break;
                }
                blocks.push(Self::block(&t, &p, act, ghostnet, shortcut)?);
                j += 1;
            }
            stage_ends.push(blocks.len() - 1);
            stage += 1;
        }
        if blocks.is_empty() {
            return Err(bad("no blocks.*: not a RepGhostNet or GhostNet".into()));
        }
        if stage_ends.len() != STAGES {
            return Err(bad(format!(
                "{} stages of bottlenecks (blocks.0 to blocks.{}); RepGhostNet and GhostNet have {STAGES}",
                stage_ends.len(),
                stage_ends.len() - 1
            )));
        }
        let final_conv = t.pointwise(&format!("blocks.{stage}.0.conv"), Act::Relu)?;
        let conv_head = t.pointwise("conv_head", Act::Relu)?;
        let (cw, cs) = t.get("classifier.weight")?;
        let (cb, _) = t.get("classifier.bias")?;
        if cs.len() != 2 || cs[1] != conv_head.cout() || cb.len() != cs[0] {
            return Err(bad(format!(
                "classifier.weight {cs:?} does not fit conv_head ({})",
                conv_head.cout()
            )));
        }
        let classifier =
            Pointwise::new(&cw, cs[0], cs[1], cb, Act::None).map_err(|e| in_layer("classifier", e))?;
        let unused = t.unused();
        if !unused.is_empty() {
            return Err(bad(format!(
                "{} tensor(s) that no layer of a RepGhostNet or GhostNet reads: {}",
                unused.len(),
                few(&unused)
            )));
        }
        let m = Model {
            name: meta.get("model").cloned().unwrap_or_default(),
            in_chans: stem.cin(),
            num_classes: cs[0],
            stem,
            blocks,
            stage_ends,
            final_conv,
            conv_head,
            classifier,
        };
        m.check_channels()?;
        Ok(m)
    }

    fn ghost(t: &Tensors, p: &str, act: Act, concat: Option<usize>) -> Result<Ghost> {
        Ok(Ghost {
            primary: t.pointwise(&format!("{p}.primary_conv.0"), act)?,
            cheap: t.depthwise(&format!("{p}.cheap_operation"), 1, act)?,
            concat,
        })
    }

    fn block(t: &Tensors, p: &str, act: Act, ghostnet: bool, shortcut: bool) -> Result<Block> {
        let has_dw = t.has(&format!("{p}.conv_dw.weight"));
        let stride = if has_dw { 2 } else { 1 };
        let proj = t.has(&format!("{p}.shortcut.0.weight"));
        // GhostNet's module width is what the next layer reads (make_divisible keeps it even).
        let g1_out = if ghostnet {
            let (_, s) = t.get(&format!("{p}.ghost2.primary_conv.0.weight"))?;
            Some(
                *s.get(1)
                    .ok_or_else(|| Error::Model(format!("'{p}.ghost2.primary_conv.0.weight' is {s:?}")))?,
            )
        } else {
            None
        };
        let ghost1 = Self::ghost(t, &format!("{p}.ghost1"), act, g1_out)?;
        let g2_out = if ghostnet {
            Some(if proj {
                t.get(&format!("{p}.shortcut.2.weight"))?.1[0]
            } else {
                ghost1.primary.cin()
            })
        } else {
            None
        };
        let ghost2 = Self::ghost(t, &format!("{p}.ghost2"), Act::None, g2_out)?;
        let dw = if has_dw {
            Some(t.depthwise(&format!("{p}.conv_dw"), 2, Act::None)?)
        } else {
            None
        };
        let se = if t.has(&format!("{p}.se.conv_reduce.weight")) {
            let (w1, s1, b1) = t.conv(&format!("{p}.se.conv_reduce"))?;
            let (w2, s2, b2) = t.conv(&format!("{p}.se.conv_expand"))?;
            if s2[0] != s1[1] || s2[1] != s1[0] {
                return Err(Error::Model(format!("'{p}.se' convs do not fit each other")));
            }
            Some(Se::new(&w1, b1, &w2, b2, s1[1], s1[0]).map_err(|e| in_layer(&format!("{p}.se"), e))?)
        } else {
            None
        };
        let shortcut = if proj {
            Shortcut::Proj {
                dw: t.depthwise(&format!("{p}.shortcut.0"), stride, Act::None)?,
                pw: t.pointwise(&format!("{p}.shortcut.2"), Act::None)?,
            }
        } else if shortcut {
            Shortcut::Identity
        } else {
            Shortcut::None
        };
        Ok(Block {
            ghost1,
            dw,
            se,
            ghost2,
            shortcut,
        })
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
