//! The engines that compute a model's logits: burn's forward pass on the model's device, or
//! the deploy runtime (`repghost-runtime`, CPU only), fed the re-parameterized weights.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use repghost_plan::Plan;

use crate::error::Result;
use crate::model::Model;
use crate::weights::{state_dict, Form, StateDict};

/// Logits `[n, classes]` of an `[n, c, h, w]` batch, computed by one model.
pub trait Logits {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>>;
}

/// Makes the [`Logits`] of an inference-form model (train or deploy form). The trainer calls
/// it for the model and its EMA after every epoch, and for the deployed model at the end.
pub type Engine = Arc<dyn Fn(&Model) -> Result<Box<dyn Logits>> + Send + Sync>;

/// Which engine computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The runtime on the CPU, burn on a GPU.
    Auto,
    Runtime,
    Burn,
}

impl EngineKind {
    /// Whether the runtime computes when the model lives on the CPU (`cpu`) or not.
    pub fn uses_runtime(self, cpu: bool) -> bool {
        match self {
            EngineKind::Auto => cpu,
            EngineKind::Runtime => true,
            EngineKind::Burn => false,
        }
    }
}

/// burn's forward pass on the model's device.
pub struct BurnLogits {
    model: Model,
    device: Device,
}

impl BurnLogits {
    /// `model` in inference form (`Model::valid`), on the device of its parameters.
    pub fn new(model: &Model) -> Self {
        BurnLogits {
            model: model.clone(),
            device: first_device(model),
        }
    }
}

impl Logits for BurnLogits {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>> {
        let x = Tensor::<4>::from_data(TensorData::new(inputs, shape), &self.device);
        Ok(crate::reparam::host(&self.model.forward(x)))
    }
}

fn first_device(model: &Model) -> Device {
    struct D(Option<Device>);
    impl burn::module::ModuleVisitor for D {
        fn visit_float<const N: usize>(&mut self, p: &Param<Tensor<N>>) {
            self.0.get_or_insert_with(|| p.val().device());
        }
    }
    let mut d = D(None);
    model.visit(&mut d);
    d.0.unwrap_or_else(Device::flex)
}

/// The runtime model of an inference-form `model` (train-form weights are folded first),
/// built from the model's plan and its deploy-form tensors in memory.
pub fn to_runtime(model: &Model, form: Form, name: &str) -> Result<repghost_runtime::Model> {
    let deploy = if form == Form::Deploy {
        model.clone()
    } else {
        model.clone().reparameterize()
    };
    let sd = state_dict(&deploy, Form::Deploy);
    let plan = Plan::new(deploy.config());
    Ok(repghost_runtime::Model::from_plan(
        &plan,
        name,
        &HostTensors(&sd),
    )?)
}

/// A state dict as the runtime reads tensors.
struct HostTensors<'a>(&'a StateDict);

impl repghost_runtime::Tensors for HostTensors<'_> {
    fn get(&self, key: &str) -> repghost_runtime::Result<Option<(Vec<usize>, Vec<f32>)>> {
        Ok(self.0.get(key).map(|t| (t.shape.clone(), t.data.clone())))
    }

    fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// The deploy runtime running one model, with the workspace of the last input shape.
pub struct RuntimeLogits {
    rt: repghost_runtime::Model,
    cache: Option<([usize; 4], repghost_runtime::Workspace)>,
    threads: usize,
}

impl RuntimeLogits {
    /// [`to_runtime`], run on `threads` threads.
    pub fn new(model: &Model, form: Form, name: &str, threads: usize) -> Result<Self> {
        Ok(RuntimeLogits {
            rt: to_runtime(model, form, name)?,
            cache: None,
            threads: threads.max(1),
        })
    }

    /// A runtime model already loaded (an INT8 file's, say), run on `threads` threads.
    pub fn from_runtime(rt: repghost_runtime::Model, threads: usize) -> Self {
        RuntimeLogits {
            rt,
            cache: None,
            threads: threads.max(1),
        }
    }

    /// Logits `[n, classes]` of an `[n, c, h, w]` batch.
    pub fn run(&mut self, inputs: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        if self.cache.as_ref().map(|(s, _)| *s) != Some(shape) {
            let ws = self
                .rt
                .workspace_threads(shape[0], shape[2], shape[3], self.threads)?;
            self.cache = Some((shape, ws));
        }
        let (_, ws) = self.cache.as_mut().expect("just set");
        Ok(self.rt.run(ws, inputs, repghost_runtime::Layout::Nchw)?.to_vec())
    }
}

impl Logits for RuntimeLogits {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>> {
        self.run(&inputs, shape)
    }
}

/// The trainer's evaluation hook on the runtime: the model (or its EMA) folded in memory and
/// run on `threads` threads. Folding is idempotent, so a deploy-form model passes too.
pub fn runtime_engine(name: &str, threads: usize) -> Engine {
    let name = name.to_string();
    Arc::new(move |m: &Model| {
        let rt = RuntimeLogits::new(m, Form::Train, &name, threads)?;
        Ok(Box::new(rt) as Box<dyn Logits>)
    })
}
