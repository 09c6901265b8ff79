//! The one place where burn module paths and PyTorch state-dict keys differ.
//!
//! Field names follow PyTorch, so most keys map as they are. The rules below cover what a
//! Rust struct cannot spell: `nn.Sequential` indices and BatchNorm's parameter names.

use super::Form;

/// Maps a burn parameter path (e.g. `["blocks","0","0","ghost1","primary_conv","bn","gamma"]`)
/// to the reference state-dict key (`blocks.0.0.ghost1.primary_conv.1.weight`).
/// `n_stages` is the index of the reference's final ConvBnAct stage (9 for the family).
pub fn torch_key(path: &[String], form: Form, n_stages: usize) -> String {
    let mut out: Vec<String> = Vec::with_capacity(path.len() + 2);
    let last = path.len().saturating_sub(1);
    for (i, seg) in path.iter().enumerate() {
        let parent = if i > 0 { path[i - 1].as_str() } else { "" };
        let s = seg.as_str();
        match (parent, s) {
            // The reference keeps its last 1x1 ConvBnAct as the only block of stage 9.
            ("", "final_conv") => out.extend(["blocks".into(), n_stages.to_string(), "0".into()]),
            // Official `switch_to_deploy` replaces the cheap Sequential by a bare conv.
            ("cheap_operation", "conv") if form != Form::Train => {}
            // nn.Sequential(conv, bn[, act]) → .0 / .1
            ("primary_conv" | "cheap_operation", "conv") => out.push("0".into()),
            ("primary_conv" | "cheap_operation", "bn") => out.push("1".into()),
            // nn.Sequential(BatchNorm2d) of the fusion branch → .0
            (_, "fusion_bn") => out.extend(["fusion_bn".into(), "0".into()]),
            // nn.Sequential(dw conv, bn, pw conv, bn) → .0 … .3
            ("shortcut", "conv_dw") => out.push("0".into()),
            ("shortcut", "bn_dw") => out.push("1".into()),
            ("shortcut", "conv_pw") => out.push("2".into()),
            ("shortcut", "bn_pw") => out.push("3".into()),
            // burn's BatchNorm names its affine parameters gamma/beta; PyTorch weight/bias.
            (_, "gamma") if i == last => out.push("weight".into()),
            (_, "beta") if i == last => out.push("bias".into()),
            _ => out.push(seg.clone()),
        }
    }
    out.join(".")
}

/// Strips the `module.` prefix that DistributedDataParallel / DataParallel adds.
pub fn strip_prefix(key: &str) -> &str {
    key.strip_prefix("module.").unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn sequential_indices_and_bn_names_map() {
        let k = |s, f| torch_key(&p(s), f, 9);
        assert_eq!(
            k("blocks.0.0.ghost1.primary_conv.bn.gamma", Form::Train),
            "blocks.0.0.ghost1.primary_conv.1.weight"
        );
        assert_eq!(
            k("blocks.3.0.ghost2.cheap_operation.conv.weight", Form::Train),
            "blocks.3.0.ghost2.cheap_operation.0.weight"
        );
        assert_eq!(
            k("blocks.3.0.ghost2.cheap_operation.conv.bias", Form::Deploy),
            "blocks.3.0.ghost2.cheap_operation.bias"
        );
        assert_eq!(
            k("blocks.1.0.ghost1.fusion_bn.running_var", Form::Train),
            "blocks.1.0.ghost1.fusion_bn.0.running_var"
        );
        assert_eq!(
            k("blocks.1.0.shortcut.bn_pw.beta", Form::Train),
            "blocks.1.0.shortcut.3.bias"
        );
        assert_eq!(
            k("blocks.1.0.conv_dw.weight", Form::Train),
            "blocks.1.0.conv_dw.weight"
        );
        assert_eq!(k("final_conv.bn1.gamma", Form::Train), "blocks.9.0.bn1.weight");
        assert_eq!(k("bn1.running_mean", Form::Train), "bn1.running_mean");
        assert_eq!(k("classifier.weight", Form::Deploy), "classifier.weight");
        assert_eq!(strip_prefix("module.conv_stem.weight"), "conv_stem.weight");
    }
}
