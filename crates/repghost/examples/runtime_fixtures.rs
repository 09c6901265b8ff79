//! Writes the deploy runtime's test fixtures: the deploy-form weights of two small random nets
//! whose BatchNorm statistics were calibrated before folding, and burn's outputs on seeded
//! inputs, so that the runtime's own tests need no deep-learning dependency (they run under
//! AddressSanitizer and, cross-built, on aarch64 under QEMU).
//!
//! ```sh
//! cargo run --release --example runtime_fixtures -- crates/repghost-runtime/tests/fixtures \
//!     crates/repghost-runtime/fuzz/seeds
//! ```
//!
//! For each net, `NAME.safetensors` (native deploy form) and `NAME.expected.safetensors`: per
//! input `CASE`, `CASE.x` (NCHW), `CASE.logits` and, where asked, `CASE.features.K` (NHWC,
//! strides 8, 16, 32); `wo.CASE.logits` are the logits of the same tensors planned as the
//! "wo" ablation (no identity shortcut). The second folder gets the fuzzer's seed: the deploy
//! weights of the smallest net (width 0.05, one grey channel, two classes).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use repghost::config::{Arch, NetConfig};
use repghost::random::{calibrated, Rng};
use repghost::weights::safetensors_io::to_bytes_bare;
use repghost::weights::{self, apply_state_dict, state_dict, Form, HostTensor, StateDict, Storage};
use repghost::Model;

struct Case {
    name: &'static str,
    shape: [usize; 4],
    features: bool,
    wo: bool,
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 logits")
}

fn host2(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 logits")
}

fn nhwc(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                y[(i * h * w + p) * c + ch] = x[(i * c + ch) * h * w + p];
            }
        }
    }
    y
}

fn put(sd: &mut StateDict, key: String, shape: Vec<usize>, data: Vec<f32>) {
    sd.insert(key, HostTensor { shape, data });
}

fn write(dir: &Path, name: &str, cfg: &NetConfig, seed: u64, cases: &[Case]) {
    let device = Device::flex();
    let deploy = calibrated(cfg, seed, 64).reparameterize();
    let path = dir.join(format!("{name}.safetensors"));
    weights::save(&deploy, name, Form::Deploy, None, Storage::F32, &path).expect("writing the weights");
    let sd = state_dict(&deploy, Form::Deploy);
    let wo_cfg = cfg.clone().with_shortcut(false);
    let wo = apply_state_dict(
        Model::with_form(&wo_cfg, Form::Deploy, &device),
        &sd,
        Form::Deploy,
    )
    .expect("the wo ablation has the same tensors");
    let mut out = StateDict::new();
    for (i, case) in cases.iter().enumerate() {
        let shape = case.shape;
        let x = Rng::new(seed * 100 + i as u64).normals(shape.iter().product());
        let t = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device);
        put(
            &mut out,
            format!("{}.logits", case.name),
            vec![shape[0], cfg.num_classes],
            host2(deploy.forward(t.clone())),
        );
        if case.wo {
            put(
                &mut out,
                format!("wo.{}.logits", case.name),
                vec![shape[0], cfg.num_classes],
                host2(wo.forward(t.clone())),
            );
        }
        if case.features {
            for (k, f) in deploy.forward_pyramid(t).into_iter().enumerate() {
                let d = f.dims();
                put(
                    &mut out,
                    format!("{}.features.{k}", case.name),
                    vec![d[0], d[2], d[3], d[1]],
                    nhwc(&host(f), d),
                );
            }
        }
        put(&mut out, format!("{}.x", case.name), shape.to_vec(), x);
    }
    let bytes = to_bytes_bare(&out).expect("serializing");
    std::fs::write(dir.join(format!("{name}.expected.safetensors")), bytes).expect("writing the outputs");
    eprintln!(
        "{name}: {} tensors of weights, {} of inputs and outputs",
        sd.len(),
        out.len()
    );
}

fn main() {
    let usage = "usage: runtime_fixtures FIXTURE_DIR SEED_DIR";
    let dir = PathBuf::from(std::env::args().nth(1).expect(usage));
    let seeds = PathBuf::from(std::env::args().nth(2).expect(usage));
    for d in [&dir, &seeds] {
        std::fs::create_dir_all(d).expect("creating the output folder");
    }
    let tiny = NetConfig::new(Arch::RepGhost, 0.05)
        .with_num_classes(2)
        .with_in_chans(1);
    let deploy = calibrated(&tiny, 1, 32).reparameterize();
    for (storage, file) in [
        (Storage::F32, "tiny.safetensors"),
        (Storage::F16, "tiny_f16.safetensors"),
    ] {
        weights::save(
            &deploy,
            "repghostnet_005",
            Form::Deploy,
            None,
            storage,
            &seeds.join(file),
        )
        .expect("writing the seed");
    }
    let case = |name, shape, features, wo| Case {
        name,
        shape,
        features,
        wo,
    };
    // RepGhostNet at 0.35×: every block kind (SE, 5×5, strided, identity and projected
    // shortcuts), channel counts of 4 mod 8 (vector tails), odd sizes whose depth-first strips
    // end mid-map, a batch of 32, the feature pyramid.
    write(
        &dir,
        "repghostnet_035",
        &NetConfig::new(Arch::RepGhost, 0.35).with_num_classes(10),
        3,
        &[
            case("a", [3, 3, 64, 64], false, true),
            case("odd", [2, 3, 61, 93], false, true),
            case("b32", [32, 3, 32, 32], false, false),
            case("feat", [2, 3, 96, 128], true, false),
        ],
    );
    // GhostNet (concatenation, odd channel counts) on grey images with a stride-1 stem, as the
    // small preset trains it.
    write(
        &dir,
        "ghostnet_035_grey",
        &NetConfig::new(Arch::Ghost, 0.35)
            .with_num_classes(10)
            .with_in_chans(1)
            .with_stem_stride(1),
        5,
        &[
            case("a", [3, 1, 40, 40], false, false),
            case("odd", [1, 1, 37, 29], false, false),
        ],
    );
}
