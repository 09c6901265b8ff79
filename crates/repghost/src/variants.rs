//! Model names: the official ones (`repghostnet_0_5x`, ablations) and timm's
//! (`repghostnet_050`, `ghostnet_100`), resolved to a [`NetConfig`].

use crate::config::{Arch, NetConfig};
use crate::error::{Error, Result};

/// A named member of the family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variant {
    /// timm's name where timm has one, else the official one.
    pub name: &'static str,
    /// The other spelling (official name for timm ones), if any.
    pub alias: Option<&'static str>,
    pub arch: Arch,
    pub width: f64,
    pub shortcut: bool,
    pub reparam_bn: bool,
    pub reparam_identity: bool,
    /// Ablations and GhostNet are not guessed from tensor shapes alone unless nothing else
    /// fits: an ablation's state dict can be identical to a standard model's.
    pub ablation: bool,
}

const fn rep(name: &'static str, alias: &'static str, width: f64) -> Variant {
    Variant {
        name,
        alias: Some(alias),
        arch: Arch::RepGhost,
        width,
        shortcut: true,
        reparam_bn: true,
        reparam_identity: false,
        ablation: false,
    }
}

const fn ghost(name: &'static str, width: f64) -> Variant {
    Variant {
        name,
        alias: None,
        arch: Arch::Ghost,
        width,
        shortcut: true,
        reparam_bn: false,
        reparam_identity: false,
        ablation: false,
    }
}

const fn ablation(name: &'static str, shortcut: bool, bn: bool, id: bool) -> Variant {
    Variant {
        name,
        alias: None,
        arch: Arch::RepGhost,
        width: 0.5,
        shortcut,
        reparam_bn: bn,
        reparam_identity: id,
        ablation: true,
    }
}

/// Every named variant: the paper's eight widths, its three ablations, and GhostNet.
pub const VARIANTS: [Variant; 14] = [
    rep("repghostnet_050", "repghostnet_0_5x", 0.5),
    rep("repghostnet_058", "repghostnet_0_58x", 0.58),
    rep("repghostnet_080", "repghostnet_0_8x", 0.8),
    rep("repghostnet_100", "repghostnet_1_0x", 1.0),
    rep("repghostnet_111", "repghostnet_1_11x", 1.11),
    rep("repghostnet_130", "repghostnet_1_3x", 1.3),
    rep("repghostnet_150", "repghostnet_1_5x", 1.5),
    rep("repghostnet_200", "repghostnet_2_0x", 2.0),
    ablation("repghostnet_repid_0_5x", true, false, true),
    ablation("repghostnet_norep_0_5x", true, false, false),
    ablation("repghostnet_wo_0_5x", false, true, false),
    ghost("ghostnet_050", 0.5),
    ghost("ghostnet_100", 1.0),
    ghost("ghostnet_130", 1.3),
];

impl Variant {
    pub fn config(&self, num_classes: usize) -> NetConfig {
        NetConfig::new(self.arch, self.width)
            .with_num_classes(num_classes)
            .with_shortcut(self.shortcut)
            .with_reparam_bn(self.reparam_bn)
            .with_reparam_identity(self.reparam_identity)
    }

    /// Paper's ImageNet top-1 (%) for the standard widths (Table 2), and GhostNet's
    /// published figures (GhostNet paper, Table 7), where known.
    pub fn imagenet_top1(&self) -> Option<f64> {
        match (self.arch, self.ablation) {
            (Arch::RepGhost, false) => match self.name {
                "repghostnet_050" => Some(66.9),
                "repghostnet_058" => Some(68.9),
                "repghostnet_080" => Some(72.2),
                "repghostnet_100" => Some(74.2),
                "repghostnet_111" => Some(75.1),
                "repghostnet_130" => Some(76.4),
                "repghostnet_150" => Some(77.5),
                "repghostnet_200" => Some(78.8),
                _ => None,
            },
            (Arch::Ghost, _) => match self.name {
                "ghostnet_050" => Some(66.2),
                "ghostnet_100" => Some(73.9),
                "ghostnet_130" => Some(75.7),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Resolves a model name. Besides the table, `repghostnet_<a>_<b>x` (official style) and
/// `repghostnet_<NNN>` (timm style, hundredths) name a RepGhostNet of any width, and
/// `ghostnet_<NNN>` a GhostNet of any width.
pub fn resolve(name: &str) -> Result<(String, Variant)> {
    let lower = name.trim().to_ascii_lowercase();
    if let Some(v) = VARIANTS
        .iter()
        .find(|v| v.name == lower || v.alias == Some(lower.as_str()))
    {
        return Ok((v.name.to_string(), *v));
    }
    let width = parse_width(&lower, "repghostnet_")
        .map(|w| (Arch::RepGhost, w))
        .or_else(|| parse_width(&lower, "ghostnet_").map(|w| (Arch::Ghost, w)));
    match width {
        Some((arch, w)) if w > 0.0 && w <= 8.0 => {
            let base = match arch {
                Arch::RepGhost => rep("repghostnet", "repghostnet", w),
                Arch::Ghost => ghost("ghostnet", w),
            };
            Ok((lower, Variant { alias: None, ..base }))
        }
        _ => Err(Error::UnknownModel {
            name: name.to_string(),
            known: VARIANTS.iter().map(|v| v.name).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn parse_width(name: &str, prefix: &str) -> Option<f64> {
    let rest = name.strip_prefix(prefix)?;
    if let Some(x) = rest.strip_suffix('x') {
        // official style: 0_75x → 0.75
        let (a, b) = x.split_once('_')?;
        if a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit()) {
            return format!("{a}.{b}").parse().ok();
        }
        return None;
    }
    if rest.len() == 3 && rest.chars().all(|c| c.is_ascii_digit()) {
        return rest.parse::<f64>().ok().map(|v| v / 100.0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_the_same_variant() {
        let (a, va) = resolve("repghostnet_1_0x").unwrap();
        let (b, vb) = resolve("repghostnet_100").unwrap();
        assert_eq!(a, b);
        assert_eq!(va, vb);
        assert_eq!(resolve("repghostnet_0_75x").unwrap().1.width, 0.75);
        assert_eq!(resolve("ghostnet_200").unwrap().1.arch, Arch::Ghost);
        assert!(!resolve("repghostnet_repid_0_5x").unwrap().1.reparam_bn);
        assert!(resolve("resnet50").is_err());
        assert!(resolve("repghostnet_").is_err());
    }
}
