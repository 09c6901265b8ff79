//! `repghost info`: the paper's model table, computed from each variant's plan (deploy form).

use anyhow::Result;
use repghost::variants::{resolve, Variant, VARIANTS};
use repghost::Plan;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Only this model (official, timm or any-width name, e.g. repghostnet_1_0x, repghostnet_130,
    /// repghostnet_0_75x). Default: every named variant.
    #[arg(long)]
    model: Option<String>,
    /// Output as an aligned table or one JSON array.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Input resolution (square) at which MACs are counted.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Classifier classes counted (the paper's table uses ImageNet's 1000).
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args) -> Result<()> {
    let list: Vec<(String, Variant)> = match &args.model {
        Some(m) => vec![resolve(m)?],
        None => VARIANTS.iter().map(|v| (v.name.to_string(), *v)).collect(),
    };
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|(name, v)| {
            let cfg = v.config(args.num_classes);
            let plan = Plan::new(&cfg);
            let c = plan.deploy_counts([args.size, args.size]);
            json!({
                "model": name,
                "alias": v.alias,
                "arch": cfg.arch,
                "width": v.width,
                "params": c.params,
                "macs": c.macs,
                "imagenet_top1": v.imagenet_top1(),
                "features": plan.taps.iter().map(|t| json!({"channels": t.channels, "stride": t.stride})).collect::<Vec<_>>(),
            })
        })
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            println!(
                "{:<24} {:<18} {:>6} {:>12} {:>10} {:>8}  stride 8/16/32 channels",
                "model", "official name", "width", "params", "MMACs", "top-1"
            );
            for r in &rows {
                let feats: Vec<String> = r["features"]
                    .as_array()
                    .map(|a| a.iter().map(|f| f["channels"].to_string()).collect())
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<18} {:>6.2} {:>12} {:>10.2} {:>8}  {}",
                    r["model"].as_str().unwrap_or(""),
                    r["alias"].as_str().unwrap_or("-"),
                    r["width"].as_f64().unwrap_or(0.0),
                    r["params"].as_u64().unwrap_or(0),
                    r["macs"].as_f64().unwrap_or(0.0) / 1e6,
                    r["imagenet_top1"]
                        .as_f64()
                        .map_or("-".into(), |a| format!("{a:.1}%")),
                    feats.join("/")
                );
            }
            println!(
                "\nDeploy form (every BatchNorm folded), {}x{} input, {} classes; params and MACs of conv and linear layers.",
                args.size, args.size, args.num_classes
            );
        }
    }
    Ok(())
}
