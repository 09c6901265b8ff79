//! `repghost demo`: the whole story in a few minutes on a fresh machine. With Fashion-MNIST
//! installed: train a small RepGhostNet, evaluate it, re-parameterize it and show that both
//! forms agree, classify a few test images, and compare train-form and deploy latency.
//! Without it: say how to get it, and show what needs no data (re-parameterization of a
//! random net, the family's size, deploy vs train latency).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use burn::tensor::{Device, Tensor, TensorData};
use repghost::engine::to_runtime;
use repghost::random::{calibrated, normal_input};
use repghost::reparam::folding_error;
use repghost::threads::Threads;
use repghost::train::{clear_run, Data, DataShape, Preset, TrainConfig, Trainer};
use repghost::variants::resolve;
use repghost::weights::{self, Form, LoadOptions};
use repghost::Model;
use repghost_data::dataset::batches;
use repghost_data::idx::{self, Mnist, Split};
use repghost_runtime::Layout;

use super::train;

#[derive(clap::Args)]
pub struct Args {
    /// Where the demo's training run goes (weights, metrics.csv, curves.png).
    #[arg(long, default_value = "repghost-demo")]
    out: PathBuf,
    /// Training images (the first N of Fashion-MNIST's 60,000).
    #[arg(long, default_value_t = 12000)]
    limit: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Folder with the Fashion-MNIST IDX files (default: the Debian package's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace the run files (config.json, metrics.csv, curves.png, last.ckpt,
    /// best.safetensors, deploy.safetensors) of another training run in --out. A previous
    /// demo run there is replaced without it; other files are never touched.
    #[arg(long)]
    overwrite: bool,
}

fn median_ms(runs: usize, f: impl FnMut()) -> f64 {
    repghost::bench::time(runs, f).median
}

/// Median batch-1 latency of burn's train form, burn's deploy form and our runtime.
fn latencies(train: &Model, deploy: &Model, name: &str, side: usize) -> Result<[f64; 3]> {
    let device = Device::flex();
    let c = train.config().in_chans;
    let x = normal_input([1, c, side, side], 3, &device);
    let a = median_ms(30, || drop(train.forward(x.clone()).into_data()));
    let b = median_ms(30, || drop(deploy.forward(x.clone()).into_data()));
    let rt = to_runtime(deploy, Form::Deploy, name)?;
    let mut ws = rt.workspace(1, side, side)?;
    let host: Vec<f32> = x
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading back the input: {e:?}"))?;
    // An error ends the timing and is reported, rather than timed.
    let r = repghost::bench::time_fallible(100, || rt.run(&mut ws, &host, Layout::Nchw).map(drop))?.median;
    Ok([a, b, r])
}

/// Learnable parameters of `model` as stored (BatchNorm running statistics excluded).
fn stored_params(model: &Model, form: Form) -> f64 {
    weights::state_dict(model, form)
        .iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, t)| t.data.len())
        .sum::<usize>() as f64
        / 1e6
}

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading back logits: {e:?}"))
}

pub fn run(args: Args) -> Result<()> {
    println!("RepGhostNet demo (Chen et al., arXiv 2211.06088)\n");
    match idx::load(args.data.as_deref(), Split::Train) {
        Ok(train) => with_data(&args, train),
        Err(e) => {
            println!("Fashion-MNIST is not available ({e}).");
            println!("Install it with `sudo apt install dataset-fashion-mnist` (or pass --data DIR with its IDX files)");
            println!("and run `repghost demo` again to train, evaluate and deploy a model. Meanwhile, what needs no data:\n");
            without_data()
        }
    }
}

fn without_data() -> Result<()> {
    let (name, v) = resolve("repghostnet_100")?;
    let train = calibrated(&v.config(1000), 7, 64);
    let deploy = train.clone().reparameterize();
    let x = normal_input([2, 3, 224, 224], 9, &Device::flex());
    let d = folding_error(&train, &deploy, x)?;
    let c = deploy.count([224, 224]);
    println!("1. Re-parameterization of {name} (random weights, calibrated BatchNorm statistics):");
    println!(
        "   train form {:.3} M parameters → deploy form {:.3} M ({:.1} M MACs at 224²); logits agree to {d:.1e} (relative)",
        stored_params(&train, Form::Train),
        stored_params(&deploy, Form::Deploy),
        c.macs as f64 / 1e6
    );
    let [a, b, r] = latencies(&train, &deploy, &name, 224)?;
    println!("2. Batch-1 latency at 224² (median of 30–100 runs):");
    println!("   burn train form {a:.1} ms, burn deploy form {b:.1} ms, repghost runtime {r:.2} ms");
    println!(
        "\nSee `repghost info` for the whole family and `repghost report` for the paper's hardware claims."
    );
    Ok(())
}

/// The demo's run: 0.5× with the small-image preset, batch 64, and neither random erasing
/// nor dropout (a short run learns faster without the regularizers meant for long ones).
fn demo_config(args: &Args, data: &Data, name: &str) -> Result<TrainConfig> {
    let (model, variant) = resolve("repghostnet_050")?;
    let net = variant.config(data.train.classes().len().max(2));
    let shape = DataShape::first_of(&*data.train)?;
    let mut cfg = TrainConfig::preset(Preset::Small, &model, net, true, name, shape, 64);
    cfg.epochs = args.epochs.max(1);
    cfg.limit = Some(args.limit);
    cfg.augment.erase_p = 0.0;
    cfg.net = cfg.net.with_dropout(0.0);
    Ok(cfg)
}

/// Whether `out` holds a run other than a demo's (which the demo may replace): any
/// `last.ckpt` whose `config.json` differs from `cfg` in more than the demo's own flags.
fn holds_another_run(out: &std::path::Path, cfg: &TrainConfig) -> bool {
    if !out.join("last.ckpt").exists() {
        return false;
    }
    let demo = std::fs::read(out.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<TrainConfig>(&b).ok())
        .is_some_and(|mut c| {
            c.epochs = cfg.epochs;
            c.limit = cfg.limit;
            &c == cfg
        });
    !demo
}

fn with_data(args: &Args, train: Mnist) -> Result<()> {
    let name = args
        .data
        .as_ref()
        .map_or("fashion-mnist".to_string(), |p| p.display().to_string());
    let data = Data {
        train: Arc::new(train),
        val: Arc::new(idx::load(args.data.as_deref(), Split::Test)?),
    };
    let cfg = demo_config(args, &data, &name)?;
    if holds_another_run(&args.out, &cfg) && !args.overwrite {
        bail!(
            "{}: holds another training run (last.ckpt); choose another --out, or pass --overwrite to replace its run files",
            args.out.display()
        );
    }
    if args.out.join("last.ckpt").exists() {
        clear_run(&args.out)?;
    }
    println!(
        "1. Training repghostnet_050 on the first {} Fashion-MNIST images for {} epoch(s) (output: {})",
        args.limit,
        args.epochs,
        args.out.display()
    );
    let trainer = Trainer::new(cfg, &args.out, &Device::flex(), None)?;
    let Some((trainer, summary)) = train::fit(trainer, &data, &args.out, Threads::all(), true)? else {
        println!("interrupted; the checkpoint is in {}", args.out.display());
        return Ok(());
    };
    let deploy_path = args.out.join("deploy.safetensors");
    let device = Device::flex();
    let deploy = weights::load(&deploy_path, &LoadOptions::default(), &device)?;
    let train_model = trainer.ema_model().unwrap_or_else(|| trainer.model());
    let pre = deploy.preprocess.clone().unwrap_or_default();
    let r = &summary.deploy_report;
    println!(
        "\n2. Test set ({} images), deploy form: top-1 {:.2}%, top-5 {:.2}%, loss {:.3}",
        r.images,
        100.0 * r.top1,
        100.0 * r.top5,
        r.loss
    );

    // Train vs deploy on 256 test images, and a few predictions.
    let ds = data.val.clone();
    let classes = ds.classes();
    let mut worst = 0f64;
    let mut shown = 0;
    println!(
        "\n3. Re-parameterized vs train form on {} test images, and the first predictions:",
        ds.len().min(256)
    );
    let probe: Vec<usize> = (0..ds.len().min(256)).collect();
    for b in batches(ds.clone(), probe, pre.clone(), 128, 1) {
        let x = Tensor::<4>::from_data(TensorData::new(b.inputs, b.shape), &device);
        worst = worst.max(folding_error(&train_model, &deploy.model, x.clone())?);
        let d = host(deploy.model.forward(x))?;
        let k = classes.len();
        for (row, &label) in d.chunks_exact(k).zip(&b.labels) {
            if shown >= 6 {
                break;
            }
            let best = (0..k).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap_or(0);
            println!(
                "   test image {shown}: {:<12} → {:<12} {}",
                classes[label],
                classes[best],
                if best == label { "✓" } else { "✗" }
            );
            shown += 1;
        }
    }
    println!("   largest logit difference, deploy vs train form: {worst:.1e} (relative)");

    let side = pre.img_size;
    let c = deploy.model.count([side, side]);
    let [a, b, rt] = latencies(&train_model, &deploy.model, &deploy.name, side)?;
    let best = trainer.state.best_top1;
    println!("\n4. Report");
    println!("   model            repghostnet_050, 1 input channel, stride-1 stem, {side}×{side} input");
    println!(
        "   accuracy         deploy {:.2}% (best epoch {:.2}%), {:.0} s of training",
        100.0 * r.top1,
        100.0 * best,
        summary.seconds
    );
    println!(
        "   parameters       train form {:.3} M, deploy form {:.3} M",
        stored_params(&train_model, Form::Train),
        stored_params(&deploy.model, Form::Deploy)
    );
    println!(
        "   MACs             deploy form {:.2} M per image",
        c.macs as f64 / 1e6
    );
    println!("   latency, batch 1 burn train form {a:.2} ms, burn deploy form {b:.2} ms, repghost runtime {rt:.3} ms");
    println!(
        "\nFiles: {} (metrics.csv, curves.png, best.safetensors, deploy.safetensors)",
        args.out.display()
    );
    Ok(())
}
