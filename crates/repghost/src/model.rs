//! [`Model`]: either network kind behind one type, for code that loads weights by name.

use burn::module::{Module, ModuleMapper, ModuleVisitor};
use burn::tensor::{Device, Tensor};

use crate::config::{Arch, NetConfig};
use crate::net::{GhostNet, RepGhostNet};
use repghost_plan::{Counts, Plan};

pub use repghost_plan::Form;

#[derive(Debug, Clone)]
pub enum Model {
    RepGhost(RepGhostNet),
    Ghost(GhostNet),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Model::RepGhost($m) => $e,
            Model::Ghost($m) => $e,
        }
    };
}

macro_rules! each_into {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Model::RepGhost($m) => Model::RepGhost($e),
            Model::Ghost($m) => Model::Ghost($e),
        }
    };
}

impl Model {
    /// A randomly initialised model in train form.
    pub fn new(cfg: &NetConfig, device: &Device) -> Self {
        match cfg.arch {
            Arch::RepGhost => Model::RepGhost(RepGhostNet::new(cfg, device)),
            Arch::Ghost => Model::Ghost(GhostNet::new(cfg, device)),
        }
    }

    /// A model whose structure is that of `form` (weights random), ready to receive a
    /// state dict of that form.
    pub fn with_form(cfg: &NetConfig, form: Form, device: &Device) -> Self {
        let m = Self::new(cfg, device);
        match form {
            Form::Train => m,
            Form::Fused => m.fuse_branches(),
            Form::Deploy => m.reparameterize(),
        }
    }

    pub fn config(&self) -> &NetConfig {
        each!(self, m => &m.config)
    }

    /// `[N, in_chans, H, W]` → logits `[N, num_classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        each!(self, m => m.forward(x))
    }

    /// Training forward with an explicit dropout mask (see [`Net::forward_train`](crate::Net)).
    pub fn forward_train(&self, x: Tensor<4>, keep: Option<Tensor<2>>) -> Tensor<2> {
        each!(self, m => m.forward_train(x, keep))
    }

    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        each!(self, m => m.forward_features(x))
    }

    pub fn forward_head(&self, x: Tensor<4>, pre_logits: bool) -> Tensor<2> {
        each!(self, m => m.forward_head(x, pre_logits))
    }

    pub fn forward_pyramid(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        each!(self, m => m.forward_pyramid(x))
    }

    pub fn feature_info(&self) -> Vec<(usize, usize)> {
        each!(self, m => m.feature_info())
    }

    pub fn reparameterize(self) -> Self {
        each_into!(self, m => m.reparameterize())
    }

    pub fn fuse_branches(self) -> Self {
        each_into!(self, m => m.fuse_branches())
    }

    /// Parameters and MACs of this network's deploy form on an `hw` input (its plan's).
    pub fn count(&self, hw: [usize; 2]) -> Counts {
        Plan::new(self.config()).deploy_counts(hw)
    }

    /// The inference module (BatchNorm on running statistics, no dropout).
    pub fn valid(&self) -> Self {
        each_into!(self, m => m.valid())
    }

    /// Back to training mode after [`Model::valid`]: tensors on the autodiff device,
    /// gradients required, BatchNorm on batch statistics (burn `Module::train`).
    pub fn train(self) -> Self {
        each_into!(self, m => m.train())
    }

    pub fn visit<V: ModuleVisitor>(&self, v: &mut V) {
        each!(self, m => m.visit(v))
    }

    pub fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        each_into!(self, m => m.map(mapper))
    }

    /// A new classifier for `num_classes` (fine-tuning on another label set).
    pub fn reset_classifier(self, num_classes: usize) -> Self {
        each_into!(self, m => m.reset_classifier(num_classes))
    }

    /// A copy on `device` that keeps its own autodiff graph (burn `Module::fork`).
    pub fn fork(self, device: &Device) -> Self {
        each_into!(self, m => m.fork(device))
    }

    pub fn to_device(self, device: &Device) -> Self {
        each_into!(self, m => m.to_device(device))
    }
}
