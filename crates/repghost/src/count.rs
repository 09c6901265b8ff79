//! Parameter and MAC counting of conv and linear layers, as in the paper's Table 2.
//! Counts follow the module structure, so the deploy form counts every folded bias.

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;

/// Running totals over a walk of the net at a given input size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub params: u64,
    /// Multiply-accumulates of conv and linear layers (bias adds not counted).
    pub macs: u64,
}

impl Counts {
    /// Adds one conv applied to an `[h, w]` map; returns its output size.
    pub fn conv(&mut self, conv: &Conv2d, [h, w]: [usize; 2]) -> [usize; 2] {
        let [out, per_group_in, kh, kw] = conv.weight.dims();
        let (pt, pl, pb, pr) = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
            _ => (0, 0, 0, 0),
        };
        let oh = (h + pt + pb - kh) / conv.stride[0] + 1;
        let ow = (w + pl + pr - kw) / conv.stride[1] + 1;
        let weights = (out * per_group_in * kh * kw) as u64;
        self.params += weights + conv.bias.as_ref().map_or(0, |_| out as u64);
        self.macs += weights * (oh * ow) as u64;
        [oh, ow]
    }

    /// Adds one linear layer with an `[out, d_in]` weight and a bias.
    pub fn linear(&mut self, [out, d_in]: [usize; 2]) {
        self.params += (out * d_in + out) as u64;
        self.macs += (out * d_in) as u64;
    }
}
