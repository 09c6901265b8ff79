//! Training: the optimizer computes PyTorch's SGD-Nesterov update, a tiny run learns, an
//! interrupted and resumed run ends bit-identical to an uninterrupted one (stopped on request,
//! or killed with SIGKILL after a recovery checkpoint), and a diverging
//! run stops with an error naming the step without writing a checkpoint.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use repghost::config::{Arch, NetConfig};
use repghost::train::sgd::{grads_in_visit_order, Sgd};
use repghost::train::step::{gradients, param_gradients, StepBatch};
use repghost::train::{Data, EpochRow, Observer, Outcome, StepInfo, TrainConfig, Trainer};
use repghost::weights::{state_dict, Form, Storage};
use repghost::Model;
use repghost_data::dataset::Dataset;
use repghost_data::{Augment, Crop, Image, Interpolation, Preprocess, Rng};

/// Four classes of 12×12 grey pictures: a bright bar in one of four places, plus noise.
struct Bars {
    n: usize,
    seed: u64,
}

impl Dataset for Bars {
    fn len(&self) -> usize {
        self.n
    }
    fn load(&self, i: usize) -> Result<(Image, usize), String> {
        let label = i % 4;
        let mut rng = Rng::keyed(&[self.seed, i as u64]);
        let mut data = vec![0u8; 144];
        for y in 0..12 {
            for x in 0..12 {
                let on = match label {
                    0 => y < 4,
                    1 => y >= 8,
                    2 => x < 4,
                    _ => x >= 8,
                };
                let v = if on { 180.0 } else { 40.0 } + 30.0 * rng.normal();
                data[y * 12 + x] = v.clamp(0.0, 255.0) as u8;
            }
        }
        Ok((
            Image {
                width: 12,
                height: 12,
                channels: 1,
                data,
            },
            label,
        ))
    }
    fn name(&self, i: usize) -> String {
        format!("bars[{i}]")
    }
    fn classes(&self) -> Vec<String> {
        ["top", "bottom", "left", "right"].map(String::from).to_vec()
    }
}

fn data() -> Data {
    Data {
        train: Arc::new(Bars { n: 96, seed: 1 }),
        val: Arc::new(Bars { n: 32, seed: 2 }),
    }
}

fn config(epochs: usize) -> TrainConfig {
    let pre = Preprocess {
        img_size: 12,
        crop_pct: 1.0,
        interpolation: Interpolation::Bilinear,
        mean: vec![0.4],
        std: vec![0.3],
        channels: 1,
    };
    TrainConfig {
        model: "repghostnet_025".into(),
        net: NetConfig::new(Arch::RepGhost, 0.25)
            .with_num_classes(4)
            .with_in_chans(1)
            .with_stem_stride(1),
        epochs,
        batch_size: 16,
        lr: 0.1,
        warmup_epochs: 1.0,
        warmup_lr: 1e-4,
        min_lr: 1e-5,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-5,
        label_smoothing: 0.1,
        ema_decay: 0.9999,
        augment: Augment {
            pre: pre.clone(),
            crop: Crop::Shift { pad: 1 },
            hflip: 0.0,
            color_jitter: 0.2,
            erase_p: 0.2,
        },
        eval: pre,
        seed: 5,
        limit: None,
        val_limit: None,
        init: None,
        data: "bars".into(),
        workers: 1,
    }
}

/// Sets the stop flag after `after` updates, as Ctrl-C would.
struct StopAfter {
    after: usize,
    seen: usize,
    flag: Arc<AtomicBool>,
}

impl Observer for StopAfter {
    fn step(&mut self, _: &StepInfo) {
        self.seen += 1;
        if self.seen == self.after {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

struct Quiet;
impl Observer for Quiet {}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let ck = repghost::train::checkpoint::load(&dir.join("last.ckpt")).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = ck.model.into_iter().map(|(k, t)| (k, t.data)).collect();
    out.extend(
        ck.ema
            .unwrap()
            .into_iter()
            .map(|(k, t)| (format!("ema.{k}"), t.data)),
    );
    out.extend(
        ck.momentum
            .into_iter()
            .map(|(k, t)| (format!("momentum.{k}"), t.data)),
    );
    out
}

#[test]
fn interrupted_and_resumed_run_matches_an_uninterrupted_one() {
    let device = Device::flex();
    let data = data();
    let full = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let mut t = Trainer::new(config(2), full.path(), &device, None).unwrap();
    let Outcome::Finished(summary) = t.run(&data, &mut Quiet, &never).unwrap() else {
        panic!("run without a stop request was interrupted");
    };
    assert_eq!(summary.history.len(), 2);
    assert!(summary.reparam_rel_diff < 1e-4, "{}", summary.reparam_rel_diff);

    // Stop mid-epoch (update 4 of 6 in epoch 1), then again after epoch 2's first update.
    let part = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut obs = StopAfter {
        after: 6,
        seen: 0,
        flag: flag.clone(),
    };
    let mut t = Trainer::new(config(2), part.path(), &device, None).unwrap();
    match t.run(&data, &mut obs, &flag).unwrap() {
        Outcome::Interrupted { global_step, .. } => assert_eq!(global_step, 6),
        Outcome::Finished(_) => panic!("stop request ignored"),
    }
    drop(t);
    flag.store(false, Ordering::SeqCst);
    let mut obs = StopAfter {
        after: 3,
        seen: 0,
        flag: flag.clone(),
    };
    let mut t = Trainer::resume(part.path(), &device).unwrap();
    assert_eq!(t.state.global_step, 6);
    match t.run(&data, &mut obs, &flag).unwrap() {
        Outcome::Interrupted { global_step, .. } => assert_eq!(global_step, 9),
        Outcome::Finished(_) => panic!("second stop request ignored"),
    }
    drop(t);
    flag.store(false, Ordering::SeqCst);
    let mut t = Trainer::resume(part.path(), &device).unwrap();
    let Outcome::Finished(resumed) = t.run(&data, &mut Quiet, &flag).unwrap() else {
        panic!("resumed run did not finish");
    };

    assert_same_run(full.path(), &summary.history, part.path(), &resumed.history);
    for f in [
        "config.json",
        "metrics.csv",
        "best.safetensors",
        "deploy.safetensors",
    ] {
        assert!(part.path().join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(part.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

/// The two runs' final weights, EMA and momentum are bit-identical, and so are their metrics
/// except wall time and speed.
fn assert_same_run(full: &Path, full_rows: &[EpochRow], part: &Path, part_rows: &[EpochRow]) {
    let (a, b) = (weights(full), weights(part));
    assert_eq!(a.len(), b.len());
    let differ: Vec<String> = a
        .iter()
        .zip(&b)
        .filter(|((_, va), (_, vb))| va != vb)
        .map(|((k, va), (_, vb))| {
            let d = va.iter().zip(vb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            format!("{k} ({d:.1e})")
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} tensors differ after resuming, e.g. {}",
        differ.len(),
        a.len(),
        differ[..differ.len().min(5)].join(", ")
    );
    assert_eq!(full_rows.len(), part_rows.len());
    for (x, y) in full_rows.iter().zip(part_rows) {
        assert_eq!(
            (x.epoch, x.train_loss, x.top1, x.ema_top1),
            (y.epoch, y.train_loss, y.top1, y.ema_top1)
        );
    }
}

/// Slows every update down, so that the parent of a killed run can kill it mid-epoch.
struct Slow;
impl Observer for Slow {
    fn step(&mut self, _: &StepInfo) {
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Starting weights read from a file, so that runs in two processes start alike whatever
/// else draws from the device's generator meanwhile (tests run on parallel threads).
fn init_from(path: &Path) -> Model {
    repghost::weights::load(path, &Default::default(), &Device::flex())
        .unwrap()
        .model
}

/// The child half of the SIGKILL test below: trains in `REPGHOST_KILL_DIR` from the weights
/// in its `init.safetensors`, with a recovery checkpoint after every update, until its parent
/// kills it.
#[test]
#[ignore = "a child process of a_run_killed_mid_epoch_resumes_from_its_recovery_checkpoint"]
fn killed_child() {
    let Ok(dir) = std::env::var("REPGHOST_KILL_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let never = AtomicBool::new(false);
    let init = init_from(&dir.join("init.safetensors"));
    let mut t = Trainer::new(config(2), dir, &Device::flex(), Some(init))
        .unwrap()
        .with_checkpoint_every(Some(Duration::ZERO));
    t.run(&data(), &mut Slow, &never).unwrap();
}

#[test]
fn a_run_killed_mid_epoch_resumes_from_its_recovery_checkpoint() {
    let device = Device::flex();
    let data = data();
    let part = tempfile::tempdir().unwrap();
    let init = part.path().join("init.safetensors");
    let cfg = config(2);
    let model = Model::new(&cfg.net, &device);
    repghost::weights::save(&model, &cfg.model, Form::Train, None, Storage::F32, &init).unwrap();

    let full = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let mut t = Trainer::new(cfg, full.path(), &device, Some(init_from(&init)))
        .unwrap()
        .with_checkpoint_every(None);
    let Outcome::Finished(summary) = t.run(&data, &mut Quiet, &never).unwrap() else {
        panic!("run without a stop request was interrupted");
    };

    // A child process trains with a checkpoint after every update and gets SIGKILL (no
    // handler runs) as soon as the first one exists.
    let ckpt = part.path().join("last.ckpt");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_child", "--ignored", "--test-threads", "1"])
        .env("REPGHOST_KILL_DIR", part.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !ckpt.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child ended ({status}) before it could be killed");
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("no recovery checkpoint after 300 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let state = repghost::train::checkpoint::load(&ckpt).unwrap().state;
    assert_eq!(state.epoch, 0, "the kill came after the first epoch");
    assert!(
        (1..6).contains(&state.step_in_epoch),
        "not a mid-epoch checkpoint: {state:?}"
    );

    let mut t = Trainer::resume(part.path(), &device).unwrap();
    let Outcome::Finished(resumed) = t.run(&data, &mut Quiet, &never).unwrap() else {
        panic!("resumed run did not finish");
    };
    assert_same_run(full.path(), &summary.history, part.path(), &resumed.history);
}

#[test]
fn a_tiny_run_learns_the_task() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(6);
    cfg.workers = 2;
    let never = AtomicBool::new(false);
    let mut t = Trainer::new(cfg, out.path(), &device, None).unwrap();
    let data = Data {
        train: Arc::new(Bars { n: 256, seed: 1 }),
        val: Arc::new(Bars { n: 64, seed: 2 }),
    };
    let Outcome::Finished(s) = t.run(&data, &mut Quiet, &never).unwrap() else {
        panic!("interrupted");
    };
    let first = &s.history[0];
    let last = s.history.last().unwrap();
    assert!(
        last.train_loss < first.train_loss,
        "{} → {}",
        first.train_loss,
        last.train_loss
    );
    // Four classes: chance is 25%.
    assert!(
        s.deploy_report.top1 >= 0.75,
        "deploy top-1 {}",
        s.deploy_report.top1
    );
    let loaded = repghost::weights::load(
        &out.path().join("deploy.safetensors"),
        &Default::default(),
        &device,
    )
    .unwrap();
    assert_eq!(loaded.form, Form::Deploy);
    assert_eq!(loaded.preprocess.unwrap().channels, 1);
}

#[test]
fn a_diverging_run_names_the_step_and_writes_no_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(1);
    cfg.lr = 1e12;
    cfg.warmup_epochs = 0.0;
    let never = AtomicBool::new(false);
    let mut t = Trainer::new(cfg, out.path(), &Device::flex(), None).unwrap();
    let err = match t.run(&data(), &mut Quiet, &never) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("lr 1e12 did not diverge"),
    };
    assert!(err.contains("step") && err.contains("loss is"), "{err}");
    assert!(!out.path().join("last.ckpt").exists());
}

/// burn's all-reduce exists only in its CUDA backend: elsewhere (here the CPU) the trainer
/// refuses it with an error naming CUDA instead of panicking in a worker thread.
#[test]
fn all_reduce_is_refused_off_cuda() {
    let out = tempfile::tempdir().unwrap();
    let t = Trainer::new(config(1), out.path(), &Device::flex(), None).unwrap();
    let err = match t.with_all_reduce(&[Device::flex()]) {
        Err(e) => e,
        Ok(_) => panic!("the CPU backend was accepted for burn's all-reduce"),
    };
    assert!(matches!(err, repghost::Error::Device(_)), "{err:?}");
    assert!(err.to_string().contains("CUDA"), "{err}");
    assert!(!out.path().join("last.ckpt").exists());
}

fn params(model: &Model) -> Vec<Vec<f32>> {
    struct V(Vec<Vec<f32>>);
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .push(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
        }
    }
    let mut v = V(Vec::new());
    model.visit(&mut v);
    v.0
}

/// Keys of a model's tensors in visit order (the order of `params` and of the gradients).
fn visit_keys(model: &Model) -> Vec<String> {
    struct K(Vec<String>, Vec<String>);
    impl ModuleVisitor for K {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.1.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.1.pop();
        }
        fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
            self.0
                .push(repghost::weights::keys::torch_key(&self.1, Form::Train));
        }
    }
    let mut k = K(Vec::new(), Vec::new());
    model.visit(&mut k);
    k.0
}

/// Two steps with the same gradient: w1 = w0 − lr(g' + μ g'), w2 = w1 − lr(g' + μ(μ g' + g'))
/// with g' = g + λ w for conv and linear weights and g' = g for everything else (PyTorch SGD,
/// dampening 0, nesterov; timm's `param_groups_weight_decay`). Which rule applies is decided
/// per tensor from its key: a `.weight` decays unless a `.running_mean` beside it makes it a
/// BatchNorm's.
#[test]
fn sgd_is_pytorch_nesterov_with_decay_on_weights_only() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let cfg = config(1).net;
    let model = Model::new(&cfg, &device);
    let x: Vec<f32> = {
        let mut r = Rng::new(9);
        (0..4 * 144).map(|_| r.normal() as f32).collect()
    };
    let b = StepBatch {
        inputs: &x,
        shape: [4, 1, 12, 12],
        labels: &[0, 1, 2, 3],
        keep: None,
    };
    let (_, grads) = gradients(&model, &b, 1, 0.1, std::slice::from_ref(&device));
    let g: Vec<Option<Vec<f32>>> = grads_in_visit_order(&model, &grads)
        .into_iter()
        .map(|g| g.map(|t| t.into_data().try_to_vec::<f32>().unwrap()))
        .collect();
    // The same gradients again, for the second step.
    let mut again = GradientsParams::new();
    model.visit(&mut Copy(&grads, &mut again));
    let keys = visit_keys(&model);
    let sd = state_dict(&model, Form::Train);
    let (lr, mu, wd) = (0.05f32, 0.9f32, 0.01f32);
    let mut sgd = Sgd::new(mu as f64, true, wd as f64);
    let w0 = params(&model);
    let m1 = sgd.step(model, grads, lr as f64);
    let w1 = params(&m1);
    let m2 = sgd.step(m1, again, lr as f64);
    let w2 = params(&m2);
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
    let (mut decayed, mut plain_tensors, mut distinguishable) = (0, 0, 0);
    for (i, key) in keys.iter().enumerate() {
        let Some(gi) = &g[i] else {
            assert!(key.contains("running_"), "{key} has no gradient");
            assert_eq!(w0[i], w1[i], "buffer {key} moved");
            continue;
        };
        let bn_weight = key
            .strip_suffix(".weight")
            .is_some_and(|m| sd.contains_key(&format!("{m}.running_mean")));
        let decays = key.ends_with(".weight") && !bn_weight;
        let wd_i = if decays { wd } else { 0.0 };
        for j in 0..gi.len() {
            let gd = gi[j] + wd_i * w0[i][j];
            let step1 = w0[i][j] - lr * (gd + mu * gd);
            assert!(close(w1[i][j], step1), "{key}[{j}]: {} vs {step1}", w1[i][j]);
            let gd1 = gi[j] + wd_i * w1[i][j];
            let step2 = w1[i][j] - lr * (gd1 + mu * (mu * gd + gd1));
            assert!(close(w2[i][j], step2), "{key}[{j}] second step");
            // The check means something only where decay moves the value measurably.
            let undecayed = w0[i][j] - lr * (gi[j] + mu * gi[j]);
            distinguishable += (decays && !close(step1, undecayed)) as usize;
        }
        if decays {
            decayed += 1;
        } else {
            plain_tensors += 1;
        }
    }
    assert!(
        decayed > 10 && plain_tensors > 10,
        "{decayed} decayed, {plain_tensors} plain tensors"
    );
    assert!(
        distinguishable > 100,
        "decay visible in {distinguishable} values only"
    );
}

#[test]
fn collected_gradients_cover_parameters_but_not_running_statistics() {
    let device = Device::flex().autodiff();
    let model = Model::new(&config(1).net, &device);
    let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 2 * 144], [2, 1, 12, 12]), &device);
    let loss = model.forward(x).sum();
    let g = grads_in_visit_order(&model, &param_gradients(&model, loss.backward()));
    let sd = state_dict(&model, Form::Train);
    let stats = sd.keys().filter(|k| k.contains("running_")).count();
    assert_eq!(g.len(), sd.len());
    assert_eq!(g.iter().filter(|g| g.is_none()).count(), stats);
}

/// Data parallelism on one device: two workers' loss and gradients are the batch-weighted
/// sums of each half's, computed alone.
#[test]
fn two_workers_sum_the_gradients_of_their_halves() {
    two_workers_match_their_halves(4);
}

/// The same over many rounds, because the parts run concurrently: when they shared autodiff
/// leaves, one part's backward could free the other's graph ("graph tape has already been
/// consumed", seen once in CI and too rare to reproduce on demand). About 10 s on 2 cores:
/// `cargo test --release --workspace --test train -- --ignored`.
#[test]
#[ignore = "stress test; run with --ignored"]
fn two_workers_match_their_halves_under_stress() {
    two_workers_match_their_halves(40);
}

fn two_workers_match_their_halves(rounds: u64) {
    let device = Device::flex().autodiff();
    device.seed(4);
    let model = Model::new(&config(1).net, &device);
    let flat = |g: GradientsParams| -> Vec<Vec<f32>> {
        grads_in_visit_order(&model, &g)
            .into_iter()
            .map(|t| t.map_or(Vec::new(), |t| t.into_data().try_to_vec::<f32>().unwrap()))
            .collect()
    };
    let labels = [0, 1, 2, 3, 3, 2, 1, 0];
    for round in 0..rounds {
        let x: Vec<f32> = {
            let mut r = Rng::new(100 + round);
            (0..8 * 144).map(|_| r.normal() as f32).collect()
        };
        let batch = |a: usize, e: usize| StepBatch {
            inputs: &x[a * 144..e * 144],
            shape: [e - a, 1, 12, 12],
            labels: &labels[a..e],
            keep: None,
        };
        let one = std::slice::from_ref(&device);
        let (loss, both) = gradients(&model, &batch(0, 8), 2, 0.1, one);
        let (l1, g1) = gradients(&model, &batch(0, 4), 1, 0.1, one);
        let (l2, g2) = gradients(&model, &batch(4, 8), 1, 0.1, one);
        assert!(
            (loss - 0.5 * (l1 + l2)).abs() <= 1e-5 * loss.abs(),
            "round {round}: loss"
        );
        let (both, g1, g2) = (flat(both), flat(g1), flat(g2));
        assert_eq!(both.len(), g1.len());
        let mut compared = 0;
        for (i, ((b, a1), a2)) in both.iter().zip(&g1).zip(&g2).enumerate() {
            assert_eq!(
                b.len(),
                a1.len(),
                "round {round}: gradient {i} present in one form only"
            );
            let scale = a1.iter().chain(a2).fold(1e-6f32, |m, v| m.max(v.abs()));
            for j in 0..b.len() {
                let want = 0.5 * (a1[j] + a2[j]);
                assert!(
                    (b[j] - want).abs() <= 1e-4 * scale,
                    "round {round}: gradient {i}[{j}] {} vs {want}",
                    b[j]
                );
                compared += 1;
            }
        }
        assert!(compared > 10_000, "only {compared} gradient values");
    }
}

/// Copies every parameter's gradient from `.0` into `.1`.
struct Copy<'a>(&'a GradientsParams, &'a mut GradientsParams);

impl ModuleVisitor for Copy<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.0.get::<D>(param.id) {
            self.1.register::<D>(param.id, g);
        }
    }
}
