//! Moving tensors between a [`Model`] and a [`StateDict`] under reference key names.

use std::collections::BTreeSet;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::keys::torch_key;
use super::{Form, HostTensor, StateDict};
use crate::model::Model;
use crate::reparam::host;

struct Collect {
    path: Vec<String>,
    form: Form,
    out: StateDict,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let key = torch_key(&self.path, self.form);
        self.out.insert(
            key,
            HostTensor {
                shape: t.dims().to_vec(),
                data: host(&t),
            },
        );
    }
}

/// The model's tensors under reference key names (`form` decides the cheap-op spelling).
pub fn state_dict(model: &Model, form: Form) -> StateDict {
    let mut c = Collect {
        path: Vec::new(),
        form,
        out: StateDict::new(),
    };
    model.visit(&mut c);
    c.out
}

struct Assign<'a> {
    path: Vec<String>,
    form: Form,
    source: &'a StateDict,
    used: BTreeSet<String>,
    missing: Vec<String>,
    misshaped: Vec<String>,
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = torch_key(&self.path, self.form);
        let expected: Vec<usize> = param.lazy_shape().dims::<D>().to_vec();
        let Some(t) = self.source.get(&key) else {
            self.missing.push(format!("{key} {expected:?}"));
            return param;
        };
        self.used.insert(key.clone());
        if t.shape != expected {
            self.misshaped
                .push(format!("{key} (file {:?}, model {expected:?})", t.shape));
            return param;
        }
        let data = TensorData::new(t.data.clone(), t.shape.clone());
        param.map(|old| Tensor::from_data(data, &old.device()))
    }
}

/// Loads `sd` into `model` (whose structure must be `form`). On any missing, unexpected or
/// mis-shaped key returns the full list, one problem per entry, and no model.
pub fn apply_state_dict(model: Model, sd: &StateDict, form: Form) -> Result<Model, Vec<String>> {
    let mut a = Assign {
        path: Vec::new(),
        form,
        source: sd,
        used: BTreeSet::new(),
        missing: Vec::new(),
        misshaped: Vec::new(),
    };
    let model = model.map(&mut a);
    let unexpected: Vec<String> = sd.keys().filter(|k| !a.used.contains(*k)).cloned().collect();
    let mut problems = Vec::new();
    for (what, list) in [
        ("missing", &a.missing),
        ("unexpected", &unexpected),
        ("mis-shaped", &a.misshaped),
    ] {
        if !list.is_empty() {
            problems.push(format!("{what} {}", few(list)));
        }
    }
    if problems.is_empty() {
        Ok(model)
    } else {
        Err(problems)
    }
}

/// The first few entries of a list and how many more there are: one line stays short
/// however many tensors a file lacks.
fn few(list: &[String]) -> String {
    const SHOWN: usize = 3;
    let head = list[..list.len().min(SHOWN)].join(", ");
    match list.len() {
        n if n <= SHOWN => head,
        n => format!("{head} and {} more ({n} in all)", n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, NetConfig};
    use burn::tensor::Device;

    #[test]
    fn a_foreign_state_dict_is_reported_in_one_short_line() {
        let device = Device::flex();
        let small = Model::new(&NetConfig::new(Arch::RepGhost, 0.5), &device);
        let large = Model::new(&NetConfig::new(Arch::Ghost, 1.0), &device);
        let problems = apply_state_dict(small, &state_dict(&large, Form::Train), Form::Train).unwrap_err();
        let line = problems.join("; ");
        assert!(line.len() < 1000, "{} bytes: {line}", line.len());
        assert!(
            line.contains("mis-shaped conv_stem.weight") || line.contains("missing "),
            "{line}"
        );
        assert!(line.contains("more ("), "{line}");
    }
}
