//! `repghost report`: the paper's hardware claims re-measured on this machine with our
//! runtime — concat vs add, train vs deploy form, RepGhostNet vs GhostNet, and the family's
//! latency next to its ImageNet accuracy — written as `REPORT.md` and PNG plots.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::Device;
use repghost::bench::{self, Timing};
use repghost::engine::to_runtime;
use repghost::threads::Threads;
use repghost::variants::{resolve, Variant, VARIANTS};
use repghost::weights::Form;
use repghost::Model as BurnModel;
use repghost_runtime::Model as RtModel;

use super::report_plot::{plot_concat_add, plot_latency_accuracy, Series};

#[derive(clap::Args)]
pub struct Args {
    /// Folder for REPORT.md and the PNG plots.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Timed runs per latency measurement (batch 1; batch 32 uses a quarter).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// CPU threads that compute, for burn and the runtime alike.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Input side of the latency measurements (the paper's 224; parameters and MACs are
    /// always counted at 224²).
    #[arg(long, default_value_t = 224)]
    size: usize,
}

/// A timing as the tables print it: (median, min, max) in ms.
fn ms(t: Timing) -> (f64, f64, f64) {
    (t.median, t.min, t.max)
}

fn deploy_runtime(v: &Variant) -> Result<(BurnModel, BurnModel, RtModel)> {
    let device = Device::flex();
    let train = BurnModel::new(&v.config(1000), &device).valid();
    let deploy = train.clone().reparameterize();
    let rt = to_runtime(&deploy, Form::Deploy, v.name)?;
    Ok((train, deploy, rt))
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let runs = args.runs.max(3);
    let threads = Threads::new(args.threads)?;
    threads.install()?;
    let threads = threads.get();
    if !(32..=1024).contains(&args.size) {
        return Err(crate::usage!("--size must be between 32 and 1024"));
    }
    let side = args.size;
    let mut md = String::new();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok();
    let date = date
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    writeln!(md, "# RepGhost on this machine\n")?;
    writeln!(
        md,
        "{date}; {}; SIMD level {}; runtime threads {threads}; input {side}²; medians of {runs} runs (batch 32: {}), with [min – max]. \
         Regenerate with `cargo run --release -- report`.\n",
        bench::cpu_model(),
        repghost_runtime::simd_level().name(),
        (runs / 4).max(3)
    )?;

    // 1. Concat vs add.
    eprintln!("[1/4] concat vs add");
    writeln!(md, "## 1. Joining feature maps: concatenation vs addition\n")?;
    writeln!(
        md,
        "Two NCHW maps joined along the channels (GhostNet) or added (RepGhost), as PyTorch lays them out.\n"
    )?;
    writeln!(
        md,
        "| shape (c × h × w) | batch | concat (ms) | add (ms) | concat / add |\n|---|---|---|---|---|"
    )?;
    let mut cat_series = Vec::new();
    for (c, hw) in [(80usize, 28usize), (24, 112), (120, 14)] {
        let mut pts = Vec::new();
        for n in [1usize, 8, 32, 64] {
            let r = (runs * 8 / n).clamp(5, 200);
            let (cat, add) = bench::concat_vs_add(n, c, hw, r);
            let (cat, add) = (ms(cat), ms(add));
            writeln!(
                md,
                "| {c} × {hw} × {hw} | {n} | {:.3} [{:.3} – {:.3}] | {:.3} [{:.3} – {:.3}] | {:.2} |",
                cat.0,
                cat.1,
                cat.2,
                add.0,
                add.1,
                add.2,
                cat.0 / add.0
            )?;
            pts.push((n as f64, cat.0 / add.0));
        }
        cat_series.push(Series {
            name: format!("{c}x{hw}x{hw}"),
            points: pts,
        });
    }
    plot_concat_add(&args.out.join("concat_vs_add.png"), &cat_series)?;
    writeln!(md, "\n![concat vs add](concat_vs_add.png)\n")?;

    // 2. Train vs deploy form.
    eprintln!("[2/4] train vs deploy form");
    writeln!(
        md,
        "## 2. What re-parameterization buys: the same RepGhostNet 1.0× in both forms (batch 1)\n"
    )?;
    writeln!(md, "| form | engine | latency (ms) |\n|---|---|---|")?;
    let v100 = resolve("repghostnet_100")?.1;
    let (train, deploy, rt) = deploy_runtime(&v100)?;
    let one = [1, 3, side, side];
    let tr = ms(bench::burn_forward(&train, one, &Device::flex(), runs));
    let de = ms(bench::burn_forward(&deploy, one, &Device::flex(), runs));
    let ru = ms(bench::runtime_forward(&rt, one, threads, runs)?);
    writeln!(
        md,
        "| train (BatchNorm, fusion branches) | burn | {:.2} [{:.2} – {:.2}] |",
        tr.0, tr.1, tr.2
    )?;
    writeln!(
        md,
        "| deploy (every BN folded) | burn | {:.2} [{:.2} – {:.2}] |",
        de.0, de.1, de.2
    )?;
    writeln!(
        md,
        "| deploy | repghost runtime | {:.2} [{:.2} – {:.2}] |\n",
        ru.0, ru.1, ru.2
    )?;
    writeln!(
        md,
        "Re-parameterization alone: {:.2}× faster in burn.\n",
        tr.0 / de.0
    )?;

    // 3 and 4. The family, and GhostNet at matched MACs.
    eprintln!("[3/4] RepGhostNet vs GhostNet, [4/4] the family");
    writeln!(
        md,
        "## 3–4. The family next to GhostNet (deploy form, {side}², runtime)\n"
    )?;
    writeln!(md, "| model | params | MACs (M) | ImageNet top-1 (%) | batch 1 (ms) | batch 32 (img/s) |\n|---|---|---|---|---|---|")?;
    let mut rep = Series {
        name: "RepGhostNet".into(),
        points: Vec::new(),
    };
    let mut by_name = std::collections::HashMap::new();
    let mut ghost = Series {
        name: "GhostNet".into(),
        points: Vec::new(),
    };
    for v in VARIANTS.iter().filter(|v| !v.ablation) {
        let (_, deploy, rt) = deploy_runtime(v)?;
        let c = deploy.count([224, 224]);
        let b1 = ms(bench::runtime_forward(&rt, [1, 3, side, side], threads, runs)?);
        let b32 = ms(bench::runtime_forward(
            &rt,
            [32, 3, side, side],
            threads,
            (runs / 4).max(3),
        )?);
        let top1 = v.imagenet_top1();
        writeln!(
            md,
            "| {} | {} | {:.2} | {} | {:.2} [{:.2} – {:.2}] | {:.1} |",
            v.name,
            c.params,
            c.macs as f64 / 1e6,
            top1.map_or("–".into(), |a| format!("{a:.1}")),
            b1.0,
            b1.1,
            b1.2,
            32.0 * 1e3 / b32.0
        )?;
        by_name.insert(v.name, (b1.0, c.macs as f64 / 1e6, top1));
        if let Some(a) = top1 {
            let s = if v.name.starts_with("ghostnet") {
                &mut ghost
            } else {
                &mut rep
            };
            s.points.push((b1.0, a));
        }
        eprintln!("  {} done", v.name);
    }
    plot_latency_accuracy(&args.out.join("latency_accuracy.png"), &[rep, ghost])?;
    writeln!(md, "\nAt matched MACs (section 3):\n")?;
    writeln!(md, "| width | RepGhostNet (ms, MMACs, top-1) | GhostNet (ms, MMACs, top-1) | GhostNet / RepGhostNet latency |\n|---|---|---|---|")?;
    for (r, g, w) in [
        ("repghostnet_050", "ghostnet_050", "0.5×"),
        ("repghostnet_100", "ghostnet_100", "1.0×"),
        ("repghostnet_130", "ghostnet_130", "1.3×"),
    ] {
        if let (Some(a), Some(b)) = (by_name.get(r), by_name.get(g)) {
            let acc = |t: Option<f64>| t.map_or("–".into(), |v| format!("{v:.1}%"));
            writeln!(
                md,
                "| {w} | {:.2}, {:.1}, {} | {:.2}, {:.1}, {} | {:.2} |",
                a.0,
                a.1,
                acc(a.2),
                b.0,
                b.1,
                acc(b.2),
                b.0 / a.0
            )?;
        }
    }
    writeln!(
        md,
        "\nTop-1 figures are the papers' (RepGhost Table 2, GhostNet Table 7), not re-measured here.\n"
    )?;
    writeln!(md, "![accuracy vs latency](latency_accuracy.png)\n")?;
    writeln!(md, "Report generated in {:.0} s.", start.elapsed().as_secs_f64())?;
    repghost::fsutil::write_atomic(&args.out.join("REPORT.md"), md.as_bytes())?;
    println!(
        "wrote {} ({:.0} s)",
        args.out.join("REPORT.md").display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
