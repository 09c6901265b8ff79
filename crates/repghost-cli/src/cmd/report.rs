//! `repghost report`: the paper's hardware claims re-measured on this machine with our
//! runtime — concat vs add, train vs deploy form, RepGhostNet vs GhostNet, and the family's
//! latency next to its ImageNet accuracy — written as `REPORT.md` and PNG plots.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use repghost::engine::to_runtime;
use repghost::random::Rng;
use repghost::variants::{resolve, Variant, VARIANTS};
use repghost::weights::Form;
use repghost::Model as BurnModel;
use repghost_runtime::{Layout, Model as RtModel};

use super::report_plot::{plot_concat_add, plot_latency_accuracy, Series};

#[derive(clap::Args)]
pub struct Args {
    /// Folder for REPORT.md and the PNG plots.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Timed runs per latency measurement (batch 1; batch 32 uses a quarter).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Threads for the runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Input side of the latency measurements (the paper's 224; parameters and MACs are
    /// always counted at 224²).
    #[arg(long, default_value_t = 224)]
    size: usize,
}

/// Median, min and max of `runs` timings of `f` in milliseconds, after warm-up.
pub fn stats(runs: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..(runs / 10).max(2) {
        f();
    }
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0], t[t.len() - 1])
}

fn deploy_runtime(v: &Variant) -> Result<(BurnModel, BurnModel, RtModel)> {
    let device = Device::flex();
    let train = BurnModel::new(&v.config(1000), &device).valid();
    let deploy = train.clone().reparameterize();
    let rt = to_runtime(&deploy, Form::Deploy, v.name, None)?;
    Ok((train, deploy, rt))
}

fn runtime_latency(
    rt: &RtModel,
    batch: usize,
    side: usize,
    threads: usize,
    runs: usize,
) -> Result<(f64, f64, f64)> {
    let x = Rng::new(1).normals(batch * 3 * side * side);
    let mut ws = rt.workspace_threads(batch, side, side, threads)?;
    let mut err = None;
    let s = stats(runs, || {
        if let Err(e) = rt.run(&mut ws, &x, Layout::Nchw) {
            err = Some(e);
        }
    });
    match err {
        Some(e) => Err(e.into()),
        None => Ok(s),
    }
}

fn burn_latency(m: &BurnModel, side: usize, runs: usize) -> (f64, f64, f64) {
    let x = Rng::new(1).normals(3 * side * side);
    let t = Tensor::<4>::from_data(TensorData::new(x, [1, 3, side, side]), &Device::flex());
    stats(runs, || {
        std::hint::black_box(m.forward(t.clone()).into_data());
    })
}

/// Joining two `[n, c, h, w]` maps (NCHW, as PyTorch holds them) by concatenation along
/// the channels versus by addition.
fn concat_vs_add(n: usize, c: usize, hw: usize, runs: usize) -> ((f64, f64, f64), (f64, f64, f64)) {
    let per = c * hw * hw;
    let a = Rng::new(2).normals(n * per);
    let b = Rng::new(3).normals(n * per);
    let mut cat = vec![0f32; 2 * n * per];
    let mut sum = vec![0f32; n * per];
    let concat = stats(runs, || {
        for i in 0..n {
            cat[2 * i * per..(2 * i + 1) * per].copy_from_slice(&a[i * per..(i + 1) * per]);
            cat[(2 * i + 1) * per..(2 * i + 2) * per].copy_from_slice(&b[i * per..(i + 1) * per]);
        }
        std::hint::black_box(&cat);
    });
    let add = stats(runs, || {
        sum.iter_mut()
            .zip(a.iter().zip(&b))
            .for_each(|(s, (x, y))| *s = x + y);
        std::hint::black_box(&sum);
    });
    (concat, add)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let (runs, threads) = (args.runs.max(3), args.threads.max(1));
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
        cpu_model(),
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
            let (cat, add) = concat_vs_add(n, c, hw, r);
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
    let tr = burn_latency(&train, side, runs);
    let de = burn_latency(&deploy, side, runs);
    let ru = runtime_latency(&rt, 1, side, threads, runs)?;
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
        let b1 = runtime_latency(&rt, 1, side, threads, runs)?;
        let b32 = runtime_latency(&rt, 32, side, threads, (runs / 4).max(3))?;
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
