//! Which vector instructions the step loops are compiled for, chosen once at run time.
//!
//! The closed-form step loops (roots, clock checks, the compressor's appends) are straight
//! floating-point code that the compiler vectorises. The portable x86-64 baseline gives it
//! two doubles a vector; AVX2, present on nearly every x86-64 desktop since 2013 but not on
//! all (Atom-class Celerons and Pentiums lack it), gives four. Rather than require it, the hot
//! loops are compiled twice, once for each, and [`Isa::detect`] picks at run time.
//!
//! Both copies compute the same bits: every operation they vectorise (add, multiply, divide,
//! square root, comparisons, conversions) is correctly rounded in IEEE 754 at any vector
//! width, and Rust never fuses a multiply and an add unless asked (`mul_add`), so enabling
//! AVX2 (which is not FMA) changes how many lanes a loop runs, not its results. The tests
//! compare the two copies on the same inputs.
//!
//! This is the one place in the workspace with `unsafe`: calling a function compiled for AVX2
//! is sound only on a processor that has it, which [`Isa`]'s constructor checks.

/// The instruction set the step loops run with: the portable baseline, or AVX2 where the
/// processor has it. Only [`Isa::detect`] can choose AVX2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Isa {
    avx2: bool,
}

impl Isa {
    /// The widest instruction set this processor runs (cached by the standard library after
    /// the first query).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                avx2: std::arch::is_x86_feature_detected!("avx2"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::BASELINE
        }
    }

    /// The portable baseline: what the crate is compiled for.
    pub const BASELINE: Self = Self { avx2: false };

    /// Whether the loops run with AVX2.
    pub fn avx2(self) -> bool {
        self.avx2
    }

    /// Runs `f` with the instruction set chosen. `f` (and what it inlines) is compiled for it
    /// only where it is inlined here, so it should be a closure marked `#[inline(always)]`
    /// calling `#[inline(always)]` code.
    #[inline(always)]
    pub(crate) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            #[expect(unsafe_code, reason = "the one call of a target-feature function")]
            // SAFETY: `avx2` is true only where `detect` found AVX2 on this processor.
            return unsafe { run_avx2(f) };
        }
        f()
    }
}

/// `f()` compiled with AVX2 (see [`Isa::run`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_closure_on_either() {
        for isa in [Isa::BASELINE, Isa::detect()] {
            assert_eq!(isa.run(|| (1.0_f64 / 3.0).sqrt()), (1.0_f64 / 3.0).sqrt());
        }
    }
}
