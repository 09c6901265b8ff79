//! 1×1 convolution as a GEMM (`[pixels, cin] × [cin, cout]`): the packed kernels of this
//! crate (AVX-512, AVX2, NEON) with bias, ReLU and the residual add fused into their stores,
//! or the gemm crate followed by one epilogue pass (other activations, other CPUs).

use super::{check_len, View};
use crate::act::Act;
use crate::error::{Error, Result};
use crate::simd::multiversion;
use crate::team::Team;

/// A 1×1 conv whose fields agree: `w` of `cin · cout` and `b` of `cout` values, `kernel` one
/// that this CPU runs and `packed` / `packed_bias` packed for it ([`Pointwise::new`] and
/// [`Pointwise::with_kernel`] establish this; the packed kernels rely on it, and
/// [`Pointwise::rows`] checks it again where it enters them).
pub struct Pointwise {
    cin: usize,
    cout: usize,
    /// `[cin][cout]` row-major.
    w: Vec<f32>,
    b: Vec<f32>,
    act: Act,
    /// Which GEMM runs this layer: the CPU's packed kernel, or the gemm crate.
    kernel: Kernel,
    /// `w` packed for that kernel (empty for the gemm crate).
    packed: Vec<f32>,
    /// `b` zero-padded to whole panels (the AVX2 kernel loads full registers).
    packed_bias: Vec<f32>,
}

/// The GEMM behind a 1×1 convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// [`super::gemm512`]: 32-column panels, 12-row tiles.
    Avx512,
    /// [`super::gemm256`]: 16-column panels, 6-row tiles.
    Avx2,
    /// `gemm_neon` (aarch64): the AVX2 kernel's 16-column panels, 5-row tiles.
    Neon,
    /// The gemm crate, then a separate epilogue pass.
    Generic,
}

impl Kernel {
    /// Columns of a packed panel: a column split between threads falls on a multiple of it.
    pub fn panel(self) -> usize {
        match self {
            Kernel::Avx512 => super::gemm512::PANEL,
            Kernel::Avx2 | Kernel::Neon => super::gemm256::PANEL,
            Kernel::Generic => 16,
        }
    }
}

impl Pointwise {
    /// From a PyTorch `[cout, cin, 1, 1]` weight.
    pub fn new(w: &[f32], cout: usize, cin: usize, b: Vec<f32>, act: Act) -> Result<Self> {
        if cin == 0 || cout == 0 {
            return Err(Error::Model(format!("1x1 conv of {cin} → {cout} channels")));
        }
        check_len("1x1 conv", "weight", w.len(), cout * cin)?;
        check_len("1x1 conv", "bias", b.len(), cout)?;
        let mut t = vec![0.0; cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                t[i * cout + o] = w[o * cin + i];
            }
        }
        let best = match crate::simd::level() {
            crate::simd::Level::Avx512 => Kernel::Avx512,
            crate::simd::Level::Avx2 => Kernel::Avx2,
            crate::simd::Level::Portable if cfg!(target_arch = "aarch64") => Kernel::Neon,
            crate::simd::Level::Portable => Kernel::Generic,
        };
        Ok(Pointwise {
            cin,
            cout,
            w: t,
            b,
            act,
            kernel: Kernel::Generic,
            packed: Vec::new(),
            packed_bias: Vec::new(),
        }
        .with_kernel(best))
    }

    pub fn cin(&self) -> usize {
        self.cin
    }

    /// The GEMM that runs this layer.
    #[cfg(test)]
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    /// The same layer, its own copy, on `kernel` (for comparing kernels on one layer).
    pub fn copy_with_kernel(&self, kernel: Kernel) -> Self {
        Pointwise {
            w: self.w.clone(),
            b: self.b.clone(),
            packed: Vec::new(),
            packed_bias: Vec::new(),
            ..*self
        }
        .with_kernel(kernel)
    }

    /// The same layer on `kernel` (the gemm crate where this CPU lacks the kernel's
    /// instructions, or where the activation is neither ReLU nor none, which the packed
    /// kernels fuse): for comparing the kernels on one layer.
    fn with_kernel(mut self, kernel: Kernel) -> Self {
        let level = crate::simd::level();
        let usable = match kernel {
            Kernel::Avx512 => level == crate::simd::Level::Avx512,
            Kernel::Avx2 => level != crate::simd::Level::Portable,
            Kernel::Neon => cfg!(target_arch = "aarch64"),
            Kernel::Generic => true,
        };
        self.kernel = if usable && matches!(self.act, Act::None | Act::Relu) {
            kernel
        } else {
            Kernel::Generic
        };
        (self.packed, self.packed_bias) = match self.kernel {
            Kernel::Avx512 => (super::gemm512::pack(&self.w, self.cin, self.cout), Vec::new()),
            Kernel::Avx2 | Kernel::Neon => (
                super::gemm256::pack(&self.w, self.cin, self.cout),
                super::gemm256::pad_bias(&self.b),
            ),
            Kernel::Generic => (Vec::new(), Vec::new()),
        };
        self
    }

    /// `dst[p, off..off+cout] = act(src[p, ..cin] · W + b)` for `m` pixels; with
    /// `accumulate` (no activation) the result is added to what `dst` holds. With a team,
    /// the rows are split between its two threads.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        m: usize,
        src: View,
        dst: &mut [f32],
        ld_dst: usize,
        off_dst: usize,
        accumulate: bool,
        team: Option<&Team>,
    ) {
        let (k, n) = (self.cin, self.cout);
        if m == 0 {
            return;
        }
        assert!(
            src.off + k <= src.ld && src.data.len() >= (m - 1) * src.ld + src.off + k,
            "pointwise src too small"
        );
        assert!(
            off_dst + n <= ld_dst && dst.len() >= (m - 1) * ld_dst + off_dst + n,
            "pointwise dst too small"
        );
        assert!(
            !accumulate || self.act == Act::None,
            "accumulate applies to linear layers only"
        );
        match team {
            Some(t) if m >= 48 => {
                let half = (m / 2).next_multiple_of(12).min(m);
                t.halves(dst, half * ld_dst, &|p, part| {
                    let (row0, rows) = if p == 0 { (0, half) } else { (half, m - half) };
                    if rows == 0 {
                        return;
                    }
                    let src = View {
                        data: &src.data[row0 * src.ld..],
                        ..src
                    };
                    self.rows(rows, src, part, ld_dst, off_dst, accumulate, 0, n);
                });
            }
            // One row (the head at batch 1: a matrix-vector product that streams megabytes
            // of weights): the columns are split instead, whole packed panels to each thread,
            // so that two cores pull weights from memory.
            Some(t) if m == 1 && n >= 2 * self.kernel.panel() => {
                let split = (n / 2).next_multiple_of(self.kernel.panel());
                t.halves(dst, off_dst + split, &|p, part| {
                    let (off, c0, c1) = if p == 0 {
                        (off_dst, 0, split)
                    } else {
                        (0, split, n)
                    };
                    self.rows(1, src, part, ld_dst, off, accumulate, c0, c1);
                });
            }
            _ => self.rows(m, src, dst, ld_dst, off_dst, accumulate, 0, n),
        }
    }

    /// Whether `packed` holds the kernel's panels of all `cin` rows and `cout` columns,
    /// `packed_bias` holds `packed_bias` values, and columns `c0..c1` start at a panel and lie
    /// within `cout`: the packed kernels' layout preconditions.
    fn packed_fits(&self, packed_bias: usize, c0: usize, c1: usize) -> bool {
        let panel = self.kernel.panel();
        self.packed.len() == self.cout.div_ceil(panel) * panel * self.cin
            && self.packed_bias.len() == packed_bias
            && c0.is_multiple_of(panel)
            && c0 <= c1
            && c1 <= self.cout
    }

    /// One thread's rows, output columns `c0..c1` (`c0` a multiple of the packed panel
    /// width) written from `dst[p * ld_dst + off_dst]` on (bounds checked by
    /// [`Pointwise::run`]).
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        m: usize,
        src: View,
        dst: &mut [f32],
        ld_dst: usize,
        off_dst: usize,
        accumulate: bool,
        c0: usize,
        c1: usize,
    ) {
        let (k, n) = (self.cin, c1 - c0);
        #[cfg(target_arch = "x86_64")]
        {
            // The packed kernels' preconditions that `run` did not check: the CPU has the
            // kernel's instructions, the panels cover all `cout` columns, and `c0` starts one.
            let panel = self.kernel.panel();
            let fits = |level: crate::simd::Level, packed_bias: usize| {
                crate::simd::level().covers(level) && self.packed_fits(packed_bias, c0, c1)
            };
            let a = src.data.as_ptr().wrapping_add(src.off);
            let c = dst.as_mut_ptr().wrapping_add(off_dst);
            let relu = self.act == Act::Relu;
            match self.kernel {
                Kernel::Avx512 => {
                    assert!(
                        fits(crate::simd::Level::Avx512, 0),
                        "AVX-512 1x1 kernel misconfigured"
                    );
                    // SAFETY: the CPU has AVX-512 and `packed` holds the panels of all `k`
                    // rows and `cout` columns, `c0` starting one (asserted above); `b` holds
                    // `cout` values (`new`); `run` bounded every row of A and C.
                    unsafe {
                        super::gemm512::gemm(
                            m,
                            k,
                            n,
                            a,
                            src.ld,
                            self.packed.as_ptr().add(c0 * k),
                            self.b.as_ptr().add(c0),
                            c,
                            ld_dst,
                            relu,
                            accumulate,
                        )
                    };
                    return;
                }
                Kernel::Avx2 => {
                    // Whole-register stores where C's rows have room (padded pixel strides).
                    let wide = super::gemm256::spill_width(n);
                    let spill = off_dst + wide <= ld_dst && dst.len() >= (m - 1) * ld_dst + off_dst + wide;
                    assert!(
                        fits(crate::simd::Level::Avx2, self.cout.div_ceil(panel) * panel),
                        "AVX2 1x1 kernel misconfigured"
                    );
                    // SAFETY: the CPU has AVX2 and FMA, `packed` and `packed_bias` hold all
                    // panels, `c0` starting one (asserted above); `run` bounded every row of
                    // A and C, and `spill` checked the room for whole registers.
                    unsafe {
                        super::gemm256::gemm(
                            m,
                            k,
                            n,
                            a,
                            src.ld,
                            self.packed.as_ptr().add(c0 * k),
                            self.packed_bias.as_ptr().add(c0),
                            c,
                            ld_dst,
                            relu,
                            accumulate,
                            spill,
                        )
                    };
                    return;
                }
                Kernel::Neon | Kernel::Generic => {}
            }
        }
        #[cfg(target_arch = "aarch64")]
        if self.kernel == Kernel::Neon {
            let panel = self.kernel.panel();
            assert!(
                self.packed_fits(self.cout.div_ceil(panel) * panel, c0, c1),
                "NEON 1x1 kernel misconfigured"
            );
            // SAFETY: `packed` and `packed_bias` hold all panels, `c0` starting one (asserted
            // above); `run` bounded every row of A and C; NEON is baseline on aarch64.
            unsafe {
                super::gemm_neon::gemm(
                    m,
                    k,
                    n,
                    src.data.as_ptr().add(src.off),
                    src.ld,
                    self.packed.as_ptr().add(c0 * k),
                    self.packed_bias.as_ptr().add(c0),
                    dst.as_mut_ptr().add(off_dst),
                    ld_dst,
                    self.act == Act::Relu,
                    accumulate,
                )
            };
            return;
        }
        // SAFETY: `run` bounded every row and column the GEMM reads or writes.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr().add(off_dst),
                1,
                ld_dst as isize,
                accumulate,
                src.data.as_ptr().add(src.off),
                1,
                src.ld as isize,
                self.w.as_ptr().add(c0),
                1,
                self.cout as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        epilogue(m, n, &self.b[c0..c1], self.act, dst, ld_dst, off_dst);
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn epilogue(m: usize, n: usize, b: &[f32], act: Act, dst: &mut [f32], ld: usize, off: usize) => epilogue_body
}

#[inline(always)]
fn epilogue_body<const FMA: bool>(
    m: usize,
    n: usize,
    b: &[f32],
    act: Act,
    dst: &mut [f32],
    ld: usize,
    off: usize,
) {
    let b = &b[..n];
    for p in 0..m {
        let row = &mut dst[p * ld + off..p * ld + off + n];
        match act {
            Act::None => row.iter_mut().zip(b).for_each(|(v, &bb)| *v += bb),
            Act::Relu => row.iter_mut().zip(b).for_each(|(v, &bb)| *v = (*v + bb).max(0.0)),
            _ => row.iter_mut().zip(b).for_each(|(v, &bb)| *v = act.apply(*v + bb)),
        }
    }
}
