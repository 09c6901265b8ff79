//! Activations applied in kernel epilogues.

/// The ghost modules' activation (the rest of the net uses ReLU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    LeakyRelu,
    HardSwish,
}

impl Act {
    /// A small integer for const-generic specialization of kernels.
    pub const fn code(self) -> u8 {
        match self {
            Act::None => 0,
            Act::Relu => 1,
            Act::Relu6 => 2,
            Act::LeakyRelu => 3,
            Act::HardSwish => 4,
        }
    }

    /// [`Act::apply`] for an activation known at compile time.
    #[inline(always)]
    pub fn apply_code<const A: u8>(x: f32) -> f32 {
        match A {
            0 => x,
            1 => x.max(0.0),
            2 => x.clamp(0.0, 6.0),
            3 => {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            _ => x * ((x + 3.0).clamp(0.0, 6.0) / 6.0),
        }
    }

    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
            Act::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            Act::HardSwish => x * ((x + 3.0).clamp(0.0, 6.0) / 6.0),
        }
    }
}
