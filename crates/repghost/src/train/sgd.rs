//! SGD with (Nesterov) momentum as PyTorch's `torch.optim.SGD` computes it (dampening 0):
//! `g ← ∇ + λ·w` (weight decay only on conv and linear weights, as timm's
//! `param_groups_weight_decay` leaves BatchNorm and biases alone), `b ← μ·b + g`,
//! `w ← w − lr · (g + μ·b)` (Nesterov) or `w ← w − lr · b`.
//!
//! burn's own `Sgd` damps momentum by default and decays every parameter, so we keep our own.
//! The momentum buffers are keyed by reference state-dict names, which makes them portable
//! across processes: a checkpoint stores them like weights.

use std::collections::BTreeMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use crate::model::Model;
use crate::weights::keys::torch_key;
use crate::weights::{Form, HostTensor, StateDict};

#[derive(Clone, Debug)]
pub struct Sgd {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Momentum buffer per parameter (flattened), by reference key.
    buffers: BTreeMap<String, Tensor<1>>,
}

impl Sgd {
    pub fn new(momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        Sgd {
            momentum,
            nesterov,
            weight_decay,
            buffers: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, model: Model, mut grads: GradientsParams, lr: f64) -> Model {
        let mut m = Update {
            sgd: self,
            grads: &mut grads,
            lr,
            path: Vec::new(),
        };
        model.map(&mut m)
    }

    /// A copy whose momentum buffers live on `device` (the optimizer of a replica).
    pub fn to_device(&self, device: &Device) -> Self {
        Sgd {
            buffers: self
                .buffers
                .iter()
                .map(|(k, t)| (k.clone(), t.clone().to_device(device)))
                .collect(),
            ..self.clone()
        }
    }

    /// The momentum buffers, for a checkpoint.
    pub fn state(&self) -> StateDict {
        self.buffers
            .iter()
            .map(|(k, t)| {
                let data = t
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 buffer");
                (
                    k.clone(),
                    HostTensor {
                        shape: vec![data.len()],
                        data,
                    },
                )
            })
            .collect()
    }

    /// Restores buffers saved by [`Sgd::state`] onto `device`; every key must name a tensor of
    /// `params` (the model's state dict) of the same size.
    pub fn load_state(&mut self, params: &StateDict, sd: &StateDict, device: &Device) -> Result<(), String> {
        self.buffers.clear();
        for (k, t) in sd {
            match params.get(k).map(|p| p.data.len()) {
                Some(n) if n == t.data.len() => {
                    let v =
                        Tensor::<1>::from_data(burn::tensor::TensorData::new(t.data.clone(), [n]), device);
                    self.buffers.insert(k.clone(), v);
                }
                Some(n) => {
                    return Err(format!(
                        "momentum '{k}' has {} values, parameter {n}",
                        t.data.len()
                    ))
                }
                None => return Err(format!("momentum '{k}' names no parameter")),
            }
        }
        Ok(())
    }
}

/// The gradient of every parameter of `model` in visit order (`None` for buffers and frozen
/// parameters), flattened: for comparing gradients tensor by tensor.
pub fn grads_in_visit_order(model: &Model, grads: &GradientsParams) -> Vec<Option<Tensor<1>>> {
    struct G<'a>(&'a GradientsParams, Vec<Option<Tensor<1>>>);
    impl ModuleVisitor for G<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let g = self.0.get::<D>(param.id).map(|g| {
                let n = g.shape().num_elements();
                g.reshape([n])
            });
            self.1.push(g);
        }
    }
    let mut v = G(grads, Vec::new());
    model.visit(&mut v);
    v.1
}

struct Update<'a> {
    sgd: &'a mut Sgd,
    grads: &'a mut GradientsParams,
    lr: f64,
    path: Vec<String>,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let distributed = tensor.is_distributed();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let w = tensor.inner();
        let mut g: Tensor<D> = grad;
        // Conv [O, I, kh, kw] and linear [I, O] weights decay; BN and biases (rank 1) do not.
        if self.sgd.weight_decay > 0.0 && D >= 2 {
            g = g.add(w.clone().mul_scalar(self.sgd.weight_decay));
        }
        let mu = self.sgd.momentum;
        if mu > 0.0 {
            let key = torch_key(&self.path, Form::Train);
            let buf = match self.sgd.buffers.remove(&key) {
                Some(b) => b.reshape(dims).mul_scalar(mu).add(g.clone()),
                None => g.clone(),
            };
            g = if self.sgd.nesterov {
                g.add(buf.clone().mul_scalar(mu))
            } else {
                buf.clone()
            };
            self.sgd.buffers.insert(key, buf.reshape([n]));
        }
        let mut updated = Tensor::from_inner(w.sub(g.mul_scalar(self.lr))).require_grad();
        if distributed {
            updated = updated.set_distributed(id);
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}
