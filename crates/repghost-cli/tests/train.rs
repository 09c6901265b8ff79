//! `repghost train` end to end on a tiny IDX dataset: the files a run leaves, refusal to
//! overwrite a run, evaluation of the deploy weights, and Ctrl-C → checkpoint → --resume.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{repghost, s, write_idx};

#[test]
fn a_run_leaves_metrics_curves_and_deployable_weights() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 128, 32);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let args = [
        "train",
        "--model",
        "repghostnet_025",
        "--data",
        s(data.path()),
        "--out",
        s(&run),
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ];
    let o = repghost(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("16×16 input"), "{log}");
    for f in [
        "config.json",
        "metrics.csv",
        "curves.png",
        "last.ckpt",
        "best.safetensors",
        "deploy.safetensors",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("epoch,lr,train_loss,val_top1"));
    let png = std::fs::read(run.join("curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["net"]["in_chans"], 1, "small grey images use the grey preset");
    assert_eq!(cfg["net"]["stem_stride"], 1);
    assert_eq!(cfg["epochs"], 2);

    // The deploy weights carry their preprocessing: eval needs no flags.
    let deploy = run.join("deploy.safetensors");
    let eval = |engine: &str| -> serde_json::Value {
        let o = repghost(&[
            "eval",
            "--weights",
            s(&deploy),
            "--data",
            s(data.path()),
            "--engine",
            engine,
            "--format",
            "json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(eval("auto")["images"], 32);

    // The per-epoch validation ran on the deploy runtime; burn's forward pass of the same
    // (EMA) weights gives the accuracy metrics.csv recorded for the last epoch.
    let burn = eval("burn");
    let last: Vec<f64> = rows[2].split(',').map(|v| v.parse().unwrap()).collect();
    for (col, key) in [(5, "top1"), (6, "top5")] {
        let recorded = last[col];
        let by_burn = 100.0 * burn[key].as_f64().unwrap();
        assert!(
            (recorded - by_burn).abs() < 1e-3,
            "{key}: {recorded} vs {by_burn}\n{csv}"
        );
    }

    // A second run into the same directory is refused rather than overwriting it.
    let o = repghost(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resume") && err.lines().count() == 1, "{err}");
}

/// A folder holding the user's own file and another run's `last.ckpt`: `train` and `demo`
/// refuse it, and with `--overwrite` replace the run's files only; the user's file survives
/// every command. The demo replaces its own previous run without being asked.
#[test]
fn train_and_demo_never_delete_what_they_did_not_write() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 128, 32);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let notes = run.join("notes.txt");
    std::fs::write(&notes, "six hours of training").unwrap();
    let foreign = b"another run's checkpoint";
    std::fs::write(run.join("last.ckpt"), foreign).unwrap();
    let user_file_intact = || {
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "six hours of training");
    };
    let ckpt = || std::fs::read(run.join("last.ckpt")).unwrap();
    let model = || -> String {
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
        cfg["model"].as_str().unwrap().to_string()
    };
    let with = |base: &[&str], extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(&["--data", s(data.path()), "--out", s(&run), "--epochs", "1"]);
        a.extend_from_slice(extra);
        repghost(&a)
    };
    let train = |extra: &[&str]| {
        with(
            &["train", "--batch-size", "32", "--model", "repghostnet_025"],
            extra,
        )
    };
    let demo = |extra: &[&str]| with(&["demo", "--limit", "64"], extra);
    let refused = |o: std::process::Output| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("--overwrite") && err.lines().count() == 1, "{err}");
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };

    refused(train(&[]));
    refused(demo(&[]));
    assert_eq!(ckpt(), foreign);
    user_file_intact();

    ok(train(&["--overwrite"]));
    assert_ne!(ckpt(), foreign);
    assert_eq!(model(), "repghostnet_025");
    user_file_intact();

    // The train run is another run to the demo: refused, then replaced when asked.
    refused(demo(&[]));
    assert_eq!(model(), "repghostnet_025");
    ok(demo(&["--overwrite"]));
    assert_eq!(model(), "repghostnet_050");
    user_file_intact();
    // Its own previous run the demo replaces unasked, whatever its --limit.
    ok(with(&["demo", "--limit", "96"], &[]));
    user_file_intact();
}

/// Starts a 3-epoch training run of `data` into `run` and sends `signal` (a `kill` flag) at
/// its first progress line; the exit status and everything it printed on stderr.
fn interrupted_run(data: &Path, run: &Path, signal: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_repghost"))
        .args(["train", "--model", "repghostnet_025", "--data", s(data)])
        .args(["--out", s(run), "--epochs", "3", "--batch-size", "16"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push(line.clone());
        if line.contains("step") {
            let pid = child.id().to_string();
            assert!(Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success());
            break;
        }
    }
    log.extend(lines.map_while(Result::ok));
    (child.wait().unwrap(), log.join("\n"))
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 256, 32);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let (status, log) = interrupted_run(data.path(), &run, "-INT");
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("--resume"), "{log}");
    assert!(run.join("last.ckpt").is_file());
    assert!(
        !run.join("deploy.safetensors").exists(),
        "an interrupted run must not look finished"
    );
    let o = repghost(&["train", "--resume", "--data", s(data.path()), "--out", s(&run)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert!(run.join("deploy.safetensors").is_file());
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // The same run without the interruption ends with the same bytes.
    let straight = out.path().join("straight");
    let o = repghost(&[
        "train",
        "--model",
        "repghostnet_025",
        "--data",
        s(data.path()),
        "--out",
        s(&straight),
        "--epochs",
        "3",
        "--batch-size",
        "16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Tensors, not bytes: safetensors writes its metadata map in hash order.
    for f in ["deploy.safetensors", "best.safetensors"] {
        let read = |p: &Path| {
            let bytes = std::fs::read(p).unwrap();
            repghost::weights::safetensors_io::read(p, &bytes).unwrap().0
        };
        let (a, b) = (read(&run.join(f)), read(&straight.join(f)));
        assert!(
            a == b,
            "{f}: the interrupted and resumed run differs from the uninterrupted one"
        );
    }
}

/// SIGTERM (what `kill`, schedulers and a shutting-down host send) saves the checkpoint as
/// Ctrl-C does, instead of killing the run and losing the epoch under way.
#[test]
fn sigterm_saves_a_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 256, 32);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let (status, log) = interrupted_run(data.path(), &run, "-TERM");
    assert_eq!(status.code(), Some(130), "{status:?}\n{log}");
    assert!(log.contains("--resume"), "{log}");
    let o = repghost(&["train", "--resume", "--data", s(data.path()), "--out", s(&run)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("deploy.safetensors").is_file());
}

#[test]
fn bad_training_inputs_fail_with_one_line() {
    let out = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str, i32)> = vec![
        (
            vec![
                "train".into(),
                "--data".into(),
                "/nonexistent/data".into(),
                "--out".into(),
                s(out.path()).into(),
            ],
            "/nonexistent/data",
            1,
        ),
        (
            vec![
                "train".into(),
                "--model".into(),
                "resnet50".into(),
                "--data".into(),
                s(out.path()).into(),
                "--out".into(),
                s(&out.path().join("x")).into(),
            ],
            "unknown model",
            2,
        ),
        (
            vec![
                "train".into(),
                "--resume".into(),
                "--data".into(),
                s(out.path()).into(),
                "--out".into(),
                s(&out.path().join("none")).into(),
            ],
            "",
            1,
        ),
    ];
    for (args, needle, code) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = repghost(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{a:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
    }
}

/// A process killed in the middle of writing its output leaves the previous file intact:
/// the fault hook writes half of the new bytes to the temporary sibling and aborts.
#[test]
fn a_kill_mid_write_leaves_the_previous_file_intact() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 64, 16);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let o = repghost(&[
        "train",
        "--model",
        "repghostnet_025",
        "--data",
        s(data.path()),
        "--out",
        s(&run),
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deploy = run.join("deploy.safetensors");
    let before = std::fs::read(&deploy).unwrap();
    let onnx = out.path().join("m.onnx");

    let best = run.join("best.safetensors");
    let ok = repghost(&["export-onnx", "--weights", s(&deploy), "--out", s(&onnx)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cases: [(&Path, Vec<&str>); 2] = [
        (
            &deploy,
            vec!["convert", "--weights", s(&best), "--out", s(&deploy)],
        ),
        (
            &onnx,
            vec!["export-onnx", "--weights", s(&deploy), "--out", s(&onnx)],
        ),
    ];
    for (target, args) in cases {
        let previous = std::fs::read(target).unwrap();
        let name = target.file_name().unwrap().to_str().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_repghost"))
            .args(&args)
            .env("REPGHOST_FAULT_WRITE", name)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            None,
            "{name}: the fault hook did not kill the writer"
        );
        assert!(
            std::fs::read(target).unwrap() == previous,
            "{name} was damaged by the interrupted write"
        );
    }
    assert_eq!(std::fs::read(&deploy).unwrap(), before);
}

#[test]
fn init_fine_tunes_from_trained_weights_and_refuses_deploy_weights() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 64, 16);
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first");
    let o = repghost(&[
        "train",
        "--model",
        "repghostnet_025",
        "--data",
        s(data.path()),
        "--out",
        s(&first),
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No --model: the weights say which model they are.
    let second = out.path().join("second");
    let o = repghost(&[
        "train",
        "--init",
        s(&first.join("best.safetensors")),
        "--data",
        s(data.path()),
        "--out",
        s(&second),
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"], "repghostnet_025");
    assert!(cfg["init"].as_str().unwrap().ends_with("best.safetensors"));
    let o = repghost(&[
        "train",
        "--init",
        s(&first.join("deploy.safetensors")),
        "--data",
        s(data.path()),
        "--out",
        s(&out.path().join("third")),
        "--epochs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("deploy form") && err.contains("deploy.safetensors"),
        "{err}"
    );
}
