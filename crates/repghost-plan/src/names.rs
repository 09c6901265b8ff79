//! The reference's names for the parts of the network (official `RepGhostNet`, timm's
//! `GhostNet`), and the mapping from a module path, as a Rust model spells its fields, to
//! the reference's state-dict key. The only place in the workspace where a block's key
//! names are spelled: the plan, the ONNX exporter and the checkpoint tools take them here.

use crate::plan::{Form, FINAL_STAGE};

pub const BLOCKS: &str = "blocks";
pub const STEM: &str = "conv_stem";
pub const STEM_BN: &str = "bn1";
pub const GHOST1: &str = "ghost1";
pub const GHOST2: &str = "ghost2";
/// A ghost module's 1×1 conv: `nn.Sequential(conv, bn[, act])`.
pub const PRIMARY: &str = "primary_conv";
/// A ghost module's depthwise 3×3 conv: `nn.Sequential(conv, bn)`, or a bare conv once its
/// branches are folded.
pub const CHEAP: &str = "cheap_operation";
/// RepGhost's BN-only fusion branch: `nn.Sequential(bn)`.
pub const FUSION_BN: &str = "fusion_bn";
/// The strided depthwise conv between a block's ghost modules, and its BatchNorm.
pub const CONV_DW: &str = "conv_dw";
pub const BN_DW: &str = "bn_dw";
pub const SE: &str = "se";
pub const SE_REDUCE: &str = "conv_reduce";
pub const SE_EXPAND: &str = "conv_expand";
/// The projection shortcut: `nn.Sequential(dw conv, bn, 1×1 conv, bn)`.
pub const SHORTCUT: &str = "shortcut";
/// The final 1×1 ConvBnAct, kept by the reference as `blocks.9.0.{conv,bn1}`.
pub const FINAL_CONV: &str = "conv";
pub const FINAL_BN: &str = "bn1";
pub const CONV_HEAD: &str = "conv_head";
pub const CLASSIFIER: &str = "classifier";

/// The rust-side field names that differ from the reference: the final ConvBnAct's module,
/// a `ConvBn`'s two halves, and the projection shortcut's four layers.
const RS_FINAL: &str = "final_conv";
const RS_CONV: &str = "conv";
const RS_BN: &str = "bn";
const RS_SC_CONV_DW: &str = "conv_dw";
const RS_SC_BN_DW: &str = "bn_dw";
const RS_SC_CONV_PW: &str = "conv_pw";
const RS_SC_BN_PW: &str = "bn_pw";

/// Maps a module path whose fields follow the reference's names (e.g.
/// `["blocks","0","0","ghost1","primary_conv","bn","gamma"]`) to the reference state-dict key
/// of `form` (`blocks.0.0.ghost1.primary_conv.1.weight`). The rules cover what a struct
/// cannot spell: `nn.Sequential` indices, the folded cheap op's bare conv, the final
/// ConvBnAct's stage, and BatchNorm's `weight`/`bias` for its affine `gamma`/`beta`.
pub fn torch_key(path: &[String], form: Form) -> String {
    let mut out: Vec<String> = Vec::with_capacity(path.len() + 2);
    let last = path.len().saturating_sub(1);
    for (i, seg) in path.iter().enumerate() {
        let parent = if i > 0 { path[i - 1].as_str() } else { "" };
        match (parent, seg.as_str()) {
            ("", RS_FINAL) => out.extend([BLOCKS.into(), FINAL_STAGE.to_string(), "0".into()]),
            // Official `switch_to_deploy` replaces the cheap Sequential by a bare conv.
            (CHEAP, RS_CONV) if form != Form::Train => {}
            (PRIMARY | CHEAP, RS_CONV) => out.push("0".into()),
            (PRIMARY | CHEAP, RS_BN) => out.push("1".into()),
            (_, FUSION_BN) => out.extend([FUSION_BN.into(), "0".into()]),
            (SHORTCUT, RS_SC_CONV_DW) => out.push("0".into()),
            (SHORTCUT, RS_SC_BN_DW) => out.push("1".into()),
            (SHORTCUT, RS_SC_CONV_PW) => out.push("2".into()),
            (SHORTCUT, RS_SC_BN_PW) => out.push("3".into()),
            (_, "gamma") if i == last => out.push("weight".into()),
            (_, "beta") if i == last => out.push("bias".into()),
            _ => out.push(seg.clone()),
        }
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str, form: Form) -> String {
        torch_key(&s.split('.').map(String::from).collect::<Vec<_>>(), form)
    }

    #[test]
    fn sequential_indices_and_bn_names_map() {
        for (path, form, key) in [
            (
                "blocks.0.0.ghost1.primary_conv.bn.gamma",
                Form::Train,
                "blocks.0.0.ghost1.primary_conv.1.weight",
            ),
            (
                "blocks.3.0.ghost2.cheap_operation.conv.weight",
                Form::Train,
                "blocks.3.0.ghost2.cheap_operation.0.weight",
            ),
            (
                "blocks.3.0.ghost2.cheap_operation.conv.bias",
                Form::Deploy,
                "blocks.3.0.ghost2.cheap_operation.bias",
            ),
            (
                "blocks.1.0.ghost1.fusion_bn.running_var",
                Form::Train,
                "blocks.1.0.ghost1.fusion_bn.0.running_var",
            ),
            (
                "blocks.1.0.shortcut.bn_pw.beta",
                Form::Train,
                "blocks.1.0.shortcut.3.bias",
            ),
            (
                "blocks.1.0.conv_dw.weight",
                Form::Train,
                "blocks.1.0.conv_dw.weight",
            ),
            ("final_conv.bn1.gamma", Form::Train, "blocks.9.0.bn1.weight"),
            ("bn1.beta", Form::Train, "bn1.bias"),
        ] {
            assert_eq!(k(path, form), key, "{path} ({form:?})");
        }
    }
}
