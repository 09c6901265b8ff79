//! Data parallelism by burn's distributed all-reduce (`burn::tensor::distributed`), as
//! PyTorch's DDP does it: one replica of the model per GPU, each with its own optimizer
//! state, every parameter marked with `Tensor::set_distributed`; each replica's forward and
//! backward pass runs on its own thread, burn's autodiff all-reduces (sums) every marked
//! gradient inside `backward()`, so every replica receives the gradient of the whole batch
//! and takes the same SGD step. Replica 0 is the trainer's model: its BatchNorm running
//! statistics, as under DDP's default buffer broadcast, are the ones evaluated, averaged
//! into the EMA and checkpointed.
//!
//! burn 0.22 implements the all-reduce only in its CUDA backend (NCCL, loaded at run time),
//! one GPU per replica; [`check`] refuses anything else with an error instead of a panic
//! inside a worker thread, where the other replicas would wait forever.

use burn::module::{ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use burn::tensor::{Device, Tensor};

use super::sgd::Sgd;
use super::step::{on_threads, param_gradients, part_loss, split, StepBatch};
use crate::error::{Error, Result};
use crate::model::Model;

/// Replicas 1.. of a model (replica 0 is the caller's) and the communication server that
/// all-reduces their gradients.
pub(crate) struct AllReduce {
    /// Every replica's device (autodiff), replica 0's first.
    devices: Vec<Device>,
    replicas: Vec<Replica>,
    /// Closes the communication server when dropped.
    _context: DistributedContext,
}

struct Replica {
    model: Model,
    sgd: Sgd,
}

impl AllReduce {
    /// Replicas of `model` (on `devices[0]`) on the other `devices`, with copies of `sgd`'s
    /// state; returns `model` marked for the all-reduce, to be used as replica 0.
    pub(crate) fn new(model: Model, sgd: &Sgd, devices: &[Device]) -> Result<(Model, Self)> {
        check(devices)?;
        let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
        let _context = DistributedContext::init(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            },
        );
        let replicas = devices[1..]
            .iter()
            .map(|d| Replica {
                model: distributed(replica(&model, d)),
                sgd: sgd.to_device(&d.clone().inner()),
            })
            .collect();
        let all = AllReduce {
            devices,
            replicas,
            _context,
        };
        Ok((distributed(model), all))
    }

    /// The batch's mean loss and, for every replica (the caller's `model` first), the
    /// gradients of the batch's mean loss, already summed over the replicas by burn. The
    /// batch must hold at least one sample per replica (an error otherwise, before any pass):
    /// a replica without a part would never join the all-reduce the others wait for.
    pub(crate) fn gradients(
        &self,
        model: &Model,
        b: &StepBatch,
        smoothing: f64,
    ) -> Result<(f32, Vec<GradientsParams>)> {
        let parts = split(b.shape[0], self.devices.len());
        if parts.len() != self.devices.len() {
            return Err(Error::Invalid(format!(
                "a batch of {} image(s) cannot feed {} GPUs: every GPU needs a part",
                b.shape[0],
                self.devices.len()
            )));
        }
        let models: Vec<&Model> = std::iter::once(model)
            .chain(self.replicas.iter().map(|r| &r.model))
            .collect();
        let results = on_threads(parts.len(), |i| {
            let (m, device) = (models[i], &self.devices[i]);
            let (value, loss) = part_loss(m, b, parts[i], parts.len(), smoothing, device);
            // Returns once every replica's marked gradients are all-reduced.
            (value, param_gradients(m, loss.backward()))
        });
        let loss = results.iter().map(|r| r.0).sum();
        Ok((loss, results.into_iter().map(|r| r.1).collect()))
    }

    /// The SGD step of replicas 1.. with their gradients (`grads[1..]`, as returned by
    /// [`AllReduce::gradients`]); replica 0 is the caller's to update.
    pub(crate) fn update(&mut self, grads: impl Iterator<Item = GradientsParams>, lr: f64) {
        for (r, g) in self.replicas.iter_mut().zip(grads) {
            r.model = r.sgd.step(r.model.clone(), g, lr);
            // burn keeps a BatchNorm's running statistics per thread until a sync; these
            // replicas' are never read, so syncing here only keeps them from piling up.
            let _ = r.model.valid();
        }
    }
}

/// A copy of `model` on `device` in training mode, with BatchNorm running states of its own
/// (clones and forks share them; `valid()` and `train()` make new ones) and the same parameter
/// ids, by which the all-reduce pairs the replicas' gradients.
fn replica(model: &Model, device: &Device) -> Model {
    model.valid().to_device(&device.clone().inner()).train()
}

/// Every trainable parameter of `model` marked for burn's all-reduce under its own id.
fn distributed(model: Model) -> Model {
    struct Mark;
    impl ModuleMapper for Mark {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = p.consume();
            // BatchNorm running statistics are buffers: they neither require nor get a
            // gradient.
            let tensor = if tensor.is_require_grad() {
                tensor.set_distributed(id)
            } else {
                tensor
            };
            Param::from_mapped_value(id, tensor, mapper)
        }
    }
    model.map(&mut Mark)
}

/// Whether burn's all-reduce can join `devices`: distinct CUDA GPUs of a build with the
/// `cuda` feature, with NCCL installed. Opens the first GPU.
pub fn check(devices: &[Device]) -> Result<()> {
    if devices.is_empty() {
        return Err(Error::Device("the all-reduce needs at least one GPU".into()));
    }
    check_cuda(devices)
}

#[cfg(not(feature = "cuda"))]
fn check_cuda(_: &[Device]) -> Result<()> {
    Err(Error::Device(
        "burn's all-reduce runs on CUDA only, and this build has no CUDA backend (rebuild with --features cuda)"
            .into(),
    ))
}

#[cfg(feature = "cuda")]
fn check_cuda(devices: &[Device]) -> Result<()> {
    use burn::tensor::DeviceType;

    let gpus = Device::enumerate(DeviceType::Cuda).into_vec();
    if gpus.is_empty() {
        return Err(Error::Device(
            "CUDA found no GPU (is NVIDIA's driver installed?)".into(),
        ));
    }
    let mut seen = Vec::new();
    for d in devices {
        let d = d.clone().inner();
        match gpus.iter().position(|g| *g == d) {
            Some(i) if seen.contains(&i) => {
                return Err(Error::Device(format!(
                    "CUDA GPU {i} is named twice: NCCL runs one replica per GPU"
                )))
            }
            Some(i) => seen.push(i),
            None => {
                return Err(Error::Device(format!(
                    "{d:?} is not one of the {} CUDA GPU(s) found: burn's all-reduce runs on CUDA only",
                    gpus.len()
                )))
            }
        }
    }
    // cubecl's CUDA runtime looks for NCCL when it opens a GPU: its "device transport".
    let nccl = burn::cubecl::Device::cuda(seen[0])
        .map(|gpu| gpu.client().has_device_transport())
        .unwrap_or(false);
    if !nccl {
        return Err(Error::Device(
            "NCCL (libnccl.so.2) was not found: install NCCL for training on several GPUs, or train on one"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use burn::module::{ModuleVisitor, ParamId};
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;
    use crate::config::{Arch, NetConfig};
    use crate::train::sgd::grads_in_visit_order;

    fn ids_and_values(model: &Model) -> (Vec<ParamId>, Vec<Vec<f32>>) {
        struct V(Vec<ParamId>, Vec<Vec<f32>>);
        impl ModuleVisitor for V {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push(p.id);
                self.1
                    .push(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
            }
        }
        let mut v = V(Vec::new(), Vec::new());
        model.valid().visit(&mut v);
        (v.0, v.1)
    }

    /// A replica keeps the parameter ids and values, trains, and updates BatchNorm running
    /// statistics of its own: a training pass on it leaves the original's untouched.
    #[test]
    fn a_replica_shares_ids_but_not_running_statistics() {
        let device = Device::flex().autodiff();
        let cfg = NetConfig::new(Arch::RepGhost, 0.25).with_num_classes(3);
        let model = Model::new(&cfg, &device);
        let copy = replica(&model, &device);
        let (ids, before) = ids_and_values(&model);
        let (copy_ids, copy_values) = ids_and_values(&copy);
        assert_eq!(ids, copy_ids);
        assert_eq!(before, copy_values);

        let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(1.0, 2.0), &device);
        let loss = copy.forward_train(x, None).sum();
        let grads = param_gradients(&copy, loss.backward());
        let (_, trained) = ids_and_values(&copy);
        let (_, after) = ids_and_values(&model);
        assert_eq!(before, after, "a pass on the replica changed the original");
        // What moved are the BatchNorm running statistics, buffers without a gradient; the
        // weights, which all have one, did not.
        let grads = grads_in_visit_order(&copy, &grads);
        let moved: Vec<usize> = (0..before.len()).filter(|&i| before[i] != trained[i]).collect();
        assert!(!moved.is_empty(), "the replica's running statistics did not move");
        assert!(moved.iter().all(|&i| grads[i].is_none()), "a weight moved");
        assert!(
            grads.iter().any(Option::is_some),
            "the replica has no trainable parameter"
        );
    }
}
