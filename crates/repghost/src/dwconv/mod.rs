//! Depthwise convolution as a burn backend extension with its own backward pass, for the
//! CPU backend (`Flex`) and autodiff over it.
//!
//! burn 0.22 computes a grouped conv's input gradient as a transposed convolution that, with
//! one channel per group, becomes an outer product and a scatter per image and channel, and
//! its kernel gradient as one convolution per channel over copied slices. Both dominated a
//! RepGhostNet training step. [`kernel`] computes the three passes directly. Other backends
//! (wgpu, CUDA) keep burn's `conv2d`; [`supported`] says which path a tensor takes.

mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::tensor::{DType, Device, Tensor, TensorData};

use kernel::Geometry;

#[backend_extension(Flex, Autodiff)]
pub trait DepthwiseBackend: Backend {
    /// `x` `[n, c, h, w]`, `weight` `[c, 1, k, k]`, symmetric zero padding, square stride.
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;
}

/// Whether [`depthwise_conv2d`] runs `x` with `weight` (the CPU backend, both `f32`).
pub(crate) fn supported(x: &Tensor<4>, weight: &Tensor<4>) -> bool {
    x.dtype() == DType::F32 && weight.dtype() == DType::F32 && x.device().inner() == Device::flex()
}

/// Depthwise conv of `x` `[n, c, h, w]` with `weight` `[c, 1, k, k]`; callers check
/// [`supported`] first.
pub(crate) fn depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DepthwiseBackend>::depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        padding,
    ))
}

/// The `f32` values of a CPU-backend tensor, contiguous (copied only if it is a strided view).
pub(crate) fn host(t: &FloatTensor<Flex>) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => t
            .to_contiguous()
            .as_slice::<f32>()
            .expect("contiguous f32")
            .to_vec()
            .into(),
    }
}

fn geometry(x: &[usize], weight: &[usize], s: usize, p: usize) -> Geometry {
    Geometry {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        k: weight[2],
        s,
        p,
    }
}

fn flex(values: Vec<f32>, shape: [usize; 4]) -> FloatTensor<Flex> {
    FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
}

impl DepthwiseBackend for Flex {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let g = geometry(x.layout().shape(), weight.layout().shape(), stride, padding);
        let [ho, wo] = g.out();
        flex(kernel::forward(&g, &host(&x), &host(&weight)), [g.n, g.c, ho, wo])
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (NodeId, NodeId, usize, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x_id, w_id, s, p) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(x_id);
        let w = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(w_id);
        let g = geometry(x.layout().shape(), w.layout().shape(), s, p);
        let dy = host(&dy);
        if let Some(node) = node_x {
            let dx = kernel::input_grad(&g, &host(&w), &dy);
            grads.register::<Flex>(node.id, flex(dx, [g.n, g.c, g.h, g.w]));
        }
        if let Some(node) = node_w {
            let dw = kernel::weight_grad(&g, &host(&x), &dy);
            grads.register::<Flex>(node.id, flex(dw, [g.c, 1, g.k, g.k]));
        }
    }
}

impl<C: CheckpointStrategy> DepthwiseBackend for Autodiff<Flex, C> {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let prep = DepthwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), stride, padding);
                let y = Flex::depthwise_conv2d(x.into_primitive(), weight.into_primitive(), stride, padding);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::depthwise_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Distribution;

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Output and both gradients equal burn's grouped `conv2d`, on an input that is a
    /// transposed (non-contiguous) view.
    #[test]
    fn matches_burn_conv2d_forward_and_backward() {
        let device = Device::flex().autodiff();
        let one = Tensor::<4>::zeros([1, 1, 1, 1], &device);
        assert!(supported(&one, &one));
        for (k, s) in [(3, 1), (3, 2), (5, 2), (5, 1)] {
            let (c, p) = (6, k / 2);
            let base = Tensor::<4>::random([3, 9, c, 11], Distribution::Normal(0.0, 1.0), &device);
            let w0 = Tensor::<4>::random([c, 1, k, k], Distribution::Normal(0.0, 0.3), &device);
            let dy = Tensor::<4>::random([3, c, 11, 9], Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let x = base.clone().require_grad();
                let w = w0.clone().require_grad();
                let xt = x.clone().swap_dims(1, 2).swap_dims(2, 3); // [3, c, 11, 9] view
                let y = if ours {
                    depthwise_conv2d(xt, w.clone(), s, p)
                } else {
                    conv2d(xt, w.clone(), None, ConvOptions::new([s, s], [p, p], [1, 1], c))
                };
                let [_, _, ho, wo] = y.dims();
                let weights = dy.clone().slice([0..3, 0..c, 0..ho, 0..wo]);
                let grads = (y.clone() * weights).sum().backward();
                (y.inner(), x.grad(&grads).unwrap(), w.grad(&grads).unwrap())
            };
            let (y1, dx1, dw1) = run(true);
            let (y2, dx2, dw2) = run(false);
            assert_eq!(y1.dims(), y2.dims());
            assert!(max_diff(y1, y2) < 1e-5, "k{k} s{s} forward");
            assert!(max_diff(dx1, dx2) < 1e-5, "k{k} s{s} input gradient");
            assert!(max_diff(dw1, dw2) < 1e-4, "k{k} s{s} kernel gradient");
        }
    }
}
