//! Training-mode BatchNorm as a burn backend extension with its own backward pass, for the
//! CPU backend (`Flex`) and autodiff over it.
//!
//! Written with tensor ops (`ops::batch_norm` on other backends), a BatchNorm is about ten
//! autodiff nodes, each a pass over the activation forward and another backward. Here the
//! batch statistics are one pass, the normalization one, and the backward pass two (the
//! channel sums of `dy` and `dy · x̂`, then `dx`), with `dgamma` and `dbeta` falling out of
//! the first.

mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::dwconv::host;

use kernel::Shape;

#[backend_extension(Flex, Autodiff)]
pub trait BatchNormBackend: Backend {
    /// Per-channel mean and biased variance of `x` `[n, c, hw]`, stacked as `[2, c]`, read in
    /// place; the result carries no gradient.
    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x` `[n, c, hw]` normalized with its own batch statistics `mean` and `var` (`[c]`,
    /// biased, from [`batch_stats`]), scaled by `gamma` and shifted by `beta` (`[c]`). The
    /// backward pass differentiates through the statistics; `mean` and `var` get no gradient.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

/// Whether [`batch_norm_train`] runs `x` (the CPU backend, `f32`).
pub(crate) fn supported(x: &Tensor<3>, gamma: &Tensor<1>) -> bool {
    x.dtype() == DType::F32 && gamma.dtype() == DType::F32 && x.device().inner() == Device::flex()
}

/// Per-channel mean and biased variance of `x` `[n, c, hw]`, as tensors on its device that
/// carry no gradient.
pub(crate) fn batch_stats(x: &Tensor<3>) -> (Tensor<1>, Tensor<1>) {
    let [_, c, _] = x.dims();
    let stats = Tensor::<2>::from_dispatch(<Dispatch as BatchNormBackend>::batch_stats(
        x.clone().into_dispatch(),
    ));
    let row = |i: usize| stats.clone().slice([i..i + 1, 0..c]).reshape([c]);
    (row(0), row(1))
}

/// See [`BatchNormBackend::batch_norm_train`]; callers check [`supported`] first.
pub(crate) fn batch_norm_train(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as BatchNormBackend>::batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        var.into_dispatch(),
        eps,
    ))
}

fn shape(x: &FloatTensor<Flex>) -> Shape {
    let d = x.layout().shape();
    Shape {
        n: d[0],
        c: d[1],
        hw: d[2],
    }
}

fn flex<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FloatTensor<Flex> {
    FloatTensor::<Flex>::from_data(TensorData::new(values, dims))
}

impl BatchNormBackend for Flex {
    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = shape(&x);
        let (mut stats, var) = kernel::stats(&s, &host(&x));
        stats.extend(var);
        flex(stats, [2, s.c])
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let s = shape(&x);
        let inv = kernel::inv_std(&host(&var), eps);
        let y = kernel::forward(&s, &host(&x), &host(&gamma), &host(&beta), &host(&mean), &inv);
        flex(y, [s.n, s.c, s.hw])
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    /// Input and gamma checkpoints, the batch mean and `1 / sqrt(var + eps)`.
    type State = (NodeId, NodeId, Vec<f32>, Vec<f64>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x_id, gamma_id, mean, inv) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(x_id);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(gamma_id);
        let s = shape(&x);
        let (dx, dgamma, dbeta) = kernel::backward(&s, &host(&x), &host(&dy), &host(&gamma), &mean, &inv);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, [s.n, s.c, s.hw]));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex(dgamma, [s.c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex(dbeta, [s.c]));
        }
    }
}

impl<C: CheckpointStrategy> BatchNormBackend for Autodiff<Flex, C> {
    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(Flex::batch_stats(x.into_primitive()))
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let prep = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (mean, var) = (mean.into_primitive(), var.into_primitive());
        let stats = (host(&mean).into_owned(), kernel::inv_std(&host(&var), eps));
        let forward = |x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>| {
            Flex::batch_norm_train(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                mean,
                var,
                eps,
            )
        };
        match prep {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&gamma), stats.0, stats.1);
                prep.finish(state, forward(x, gamma, beta))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, gamma, beta)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Output and the gradients of input, gamma and beta equal those of the tensor-op form
    /// (what other backends run), on an input that is a transposed (non-contiguous) view.
    #[test]
    fn matches_the_tensor_op_form_forward_and_backward() {
        let device = Device::flex().autodiff();
        for (n, c, hw) in [(4, 5, 9), (2, 3, 1), (8, 16, 49)] {
            let base = Tensor::<3>::random([n, hw, c], Distribution::Normal(0.5, 2.0), &device);
            let g0 = Tensor::<1>::random([c], Distribution::Normal(1.0, 0.3), &device);
            let b0 = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.3), &device);
            let dy = Tensor::<3>::random([n, c, hw], Distribution::Normal(0.0, 1.0), &device);
            let eps = 1e-5;
            let run = |ours: bool| {
                let x = base.clone().require_grad();
                let gamma = g0.clone().require_grad();
                let beta = b0.clone().require_grad();
                let xt = x.clone().swap_dims(1, 2); // [n, c, hw] view
                assert!(supported(&xt, &gamma));
                let y = if ours {
                    let (mean, var) = batch_stats(&xt);
                    batch_norm_train(xt, gamma.clone(), beta.clone(), mean, var, eps)
                } else {
                    crate::ops::batch_norm_tensor_ops(xt, gamma.clone(), beta.clone(), eps).0
                };
                let grads = (y.clone() * dy.clone()).sum().backward();
                (
                    y.inner(),
                    x.grad(&grads).unwrap(),
                    gamma.grad(&grads).unwrap(),
                    beta.grad(&grads).unwrap(),
                )
            };
            // The batch statistics themselves (f64 sums here, f32 reductions there).
            let xt = base.clone().swap_dims(1, 2);
            let (mean1, var1) = batch_stats(&xt);
            let (_, mean2, var2) = crate::ops::batch_norm_tensor_ops(xt, g0.clone(), b0.clone(), eps);
            let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            let (mean1, var1, mean2, var2) = (v1(mean1), v1(var1), v1(mean2), v1(var2));
            for ch in 0..c {
                assert!(
                    (mean1[ch] - mean2[ch]).abs() <= 1e-5 * (1.0 + mean2[ch].abs()),
                    "mean {ch}"
                );
                assert!((var1[ch] - var2[ch]).abs() <= 1e-5 * var2[ch], "var {ch}");
            }
            // The input gradient is (γ/σ)·(dy − mean(dy) − ŷ·mean(dy·ŷ)): its terms, and the
            // rounding in both forms, scale with γ/σ·|dy| even where they cancel (with two
            // samples per channel ŷ = ±1 whatever x is, and the exact gradient is ~0).
            let gamma = v1(g0.clone());
            let dy_max = dy.clone().abs().max().into_scalar::<f32>();
            let dx_floor = (0..c).fold(1f32, |m, ch| {
                m.max(gamma[ch].abs() / (var2[ch] + eps as f32).sqrt() * dy_max)
            });
            let (y1, dx1, dg1, db1) = run(true);
            let (y2, dx2, dg2, db2) = run(false);
            let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                let floor = if what == "input gradient" { dx_floor } else { 1.0 };
                let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
                let diff = a.iter().zip(&b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                assert!(
                    diff <= 2e-5 * scale,
                    "{n}×{c}×{hw} {what}: {diff} (scale {scale})"
                );
            };
            let v = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
            close(v(y1), v(y2), "output");
            close(v(dx1), v(dx2), "input gradient");
            close(v1(dg1), v1(dg2), "gamma gradient");
            close(v1(db1), v1(db2), "beta gradient");
        }
    }
}
