//! The plan (`repghost-plan`, no burn) and the burn modules describe one network: for every
//! named variant, in every form, the plan lists exactly the keys and shapes of the burn
//! model's state dict, its feature taps are the model's `feature_info`, and its deploy-form
//! parameter count is the folded burn model's.

use burn::tensor::Device;
use repghost::config::{Arch, NetConfig};
use repghost::variants::VARIANTS;
use repghost::weights::{state_dict, Form};
use repghost::Model;
use repghost_plan::Plan;

fn configs() -> Vec<(String, NetConfig)> {
    let mut out: Vec<(String, NetConfig)> = VARIANTS
        .iter()
        .map(|v| (v.name.to_string(), v.config(10)))
        .collect();
    // Grey input, a stride-1 stem, a classifier of another size, other widths.
    out.push((
        "repghostnet_100 small".into(),
        NetConfig::new(Arch::RepGhost, 1.0)
            .with_in_chans(1)
            .with_stem_stride(1)
            .with_num_classes(7),
    ));
    out.push(("repghostnet 0.2x".into(), NetConfig::new(Arch::RepGhost, 0.2)));
    out.push(("ghostnet 0.3x".into(), NetConfig::new(Arch::Ghost, 0.3)));
    out
}

#[test]
fn the_plan_lists_the_burn_models_tensors_in_every_form() {
    let device = Device::flex();
    for (name, cfg) in configs() {
        let plan = Plan::new(&cfg);
        let forms: &[Form] = match cfg.arch {
            Arch::RepGhost => &[Form::Train, Form::Fused, Form::Deploy],
            // GhostNet has no fusion branches to fold: no fused form of its own.
            Arch::Ghost => &[Form::Train, Form::Deploy],
        };
        for &form in forms {
            let burn = state_dict(&Model::with_form(&cfg, form, &device), form);
            let planned = plan.tensors(form);
            let mut listed: Vec<(String, Vec<usize>)> =
                planned.iter().map(|t| (t.key.clone(), t.shape.clone())).collect();
            listed.sort();
            let built: Vec<(String, Vec<usize>)> =
                burn.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect();
            let only_plan: Vec<&(String, Vec<usize>)> =
                listed.iter().filter(|t| !built.contains(t)).collect();
            let only_burn: Vec<&(String, Vec<usize>)> =
                built.iter().filter(|t| !listed.contains(t)).collect();
            assert!(
                only_plan.is_empty() && only_burn.is_empty() && planned.len() == burn.len(),
                "{name} {form:?}: only in the plan {:?}; only in burn {:?}",
                &only_plan[..only_plan.len().min(4)],
                &only_burn[..only_burn.len().min(4)]
            );
        }
        let model = Model::new(&cfg, &device);
        let taps: Vec<(usize, usize)> = plan.taps.iter().map(|t| (t.channels, t.stride)).collect();
        assert_eq!(taps, model.feature_info(), "{name}: feature taps");
        // The deploy form holds convs, biases and the classifier only: its state dict's size
        // is the parameter count (MACs are checked against the paper in tests/counts.rs).
        let deploy = state_dict(&model.reparameterize(), Form::Deploy);
        let stored: usize = deploy.values().map(|t| t.data.len()).sum();
        assert_eq!(
            plan.deploy_counts([224, 224]).params,
            stored as u64,
            "{name}: parameters"
        );
    }
}
