//! Recognising the form and variant of a bare state dict from its keys and shapes.

use repghost_plan::{names, Plan};

use super::{Form, StateDict};
use crate::config::{make_divisible, NetConfig};
use crate::variants::{Variant, VARIANTS};

/// Train form keeps the cheap op's BatchNorm; the official `convert.py` output folds only
/// that branch (the stem BN stays); our deploy form keeps no BatchNorm at all.
pub fn form_of(sd: &StateDict) -> Form {
    let cheap_bn = format!("{}.1.running_mean", names::CHEAP);
    if sd.keys().any(|k| k.ends_with(&cheap_bn)) {
        Form::Train
    } else if sd.contains_key(&format!("{}.running_mean", names::STEM_BN)) {
        Form::Fused
    } else {
        Form::Deploy
    }
}

/// `(num_classes, in_chans)` as the classifier and the stem say.
pub fn io_of(sd: &StateDict) -> Option<(usize, usize)> {
    let nc = sd
        .get(&format!("{}.weight", names::CLASSIFIER))
        .filter(|t| t.shape.len() == 2)?
        .shape[0];
    let ic = sd
        .get(&format!("{}.weight", names::STEM))
        .filter(|t| t.shape.len() == 4)?
        .shape[1];
    Some((nc, ic))
}

/// Does `sd` hold exactly the keys and shapes of `cfg` in `form` (as its plan lists them)?
pub fn fits(cfg: &NetConfig, form: Form, sd: &StateDict) -> bool {
    let expected = Plan::new(cfg).tensors(form);
    expected.len() == sd.len()
        && expected
            .iter()
            .all(|t| sd.get(&t.key).is_some_and(|s| s.shape == t.shape))
}

/// The named variants whose structure matches `sd` and that compute different functions.
/// Standard variants are preferred; an ablation whose state dict equals a standard one's is
/// listed beside it only where it computes something else (the "wo" ablation, which has no
/// identity shortcut), and alone only where no standard variant fits.
pub fn candidates(sd: &StateDict, form: Form) -> Vec<Variant> {
    let Some((nc, ic)) = io_of(sd) else {
        return Vec::new();
    };
    let stem = sd.get(&format!("{}.weight", names::STEM)).map(|t| t.shape[0]);
    let check = |v: &&Variant| {
        // Cheap pre-filter on the stem width before planning the net.
        stem == Some(make_divisible(16.0 * v.width, 4)) && fits(&v.config(nc).with_in_chans(ic), form, sd)
    };
    let mut standard: Vec<Variant> = VARIANTS
        .iter()
        .filter(|v| !v.ablation)
        .filter(check)
        .copied()
        .collect();
    let ablations = VARIANTS.iter().filter(|v| v.ablation).filter(check).copied();
    if standard.is_empty() {
        return ablations.collect();
    }
    let differ: Vec<Variant> = ablations
        .filter(|a| standard.iter().all(|s| s.shortcut != a.shortcut))
        .collect();
    standard.extend(differ);
    standard
}
