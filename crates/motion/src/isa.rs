//! Which vector instructions the step loops are compiled for, chosen once at run time.
//!
//! The closed-form step loops (roots, clock checks, the compressor's appends) are straight
//! floating-point code that the compiler vectorises, and the compressor's search is short
//! dependent chains of two-lane floating-point and integer operations. The portable x86-64
//! baseline gives them two doubles a vector and two-operand instructions. AVX2, present on
//! nearly every x86-64 desktop since 2013 but not on all (Atom-class Celerons and Pentiums lack
//! it), gives four lanes and three-operand forms; AVX-512 (F, DQ, VL: AMD since Zen 4, Intel's
//! server and some laptop parts) adds conversions between doubles and 64-bit integers in
//! vectors (the step clocks), masks and 32 registers. Rather than require either, the hot
//! loops are compiled three times and [`Isa::detect`] picks the widest this processor has —
//! but for AVX-512 on Intel's processors, which run 512-bit vector code at a lower clock
//! (their AVX-512 frequency licences, which slow the whole core, scalar code too): there the
//! AVX2 copy is faster. Measured on case f (`gantry batch`, the whole run): on AMD Zen 4 the
//! AVX-512 copy took 8 % less time than AVX2 (3f15e65); on an Intel Xeon with AMX (Sapphire
//! Rapids or later) it took 4 % more.
//!
//! Every copy computes the same bits: every operation they vectorise (add, multiply, divide,
//! square root, comparisons, conversions) is correctly rounded in IEEE 754 at any vector
//! width, and Rust never fuses a multiply and an add unless asked (`mul_add`), so enabling
//! AVX2 or AVX-512 (neither is FMA) changes how many lanes a loop runs, not its results. The
//! tests compare the copies on the same inputs ([`Isa::available`]).
//!
//! This is the one place in the workspace with `unsafe`: calling a function compiled for AVX2
//! or AVX-512 is sound only on a processor that has it, which [`Isa`]'s constructor checks.

/// The instruction sets of [`Isa`], narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
enum Level {
    #[default]
    Baseline,
    Avx2,
    Avx512,
}

/// The instruction set the step loops run with: the portable baseline, AVX2 or AVX-512 where
/// the processor has it. Only [`Isa::detect`] and [`Isa::available`] can choose the wider ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Isa {
    level: Level,
}

impl Isa {
    /// The instruction set the step loops run fastest with on this processor: the widest it
    /// runs, but AVX2 rather than AVX-512 on Intel's (see the module's documentation). The
    /// feature queries are cached by the standard library; the vendor's is one CPUID
    /// instruction, made only where AVX-512 is present.
    pub fn detect() -> Self {
        let widest = Self::widest();
        if widest.level == Level::Avx512 && is_intel() {
            return Self { level: Level::Avx2 };
        }
        widest
    }

    /// The widest instruction set this processor runs.
    fn widest() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let level = if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                Level::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2") {
                Level::Avx2
            } else {
                Level::Baseline
            };
            Self { level }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::BASELINE
        }
    }

    /// Every instruction set this processor runs, the baseline first and the widest last
    /// ([`Isa::detect`]'s among them): what the tests compare.
    pub fn available() -> Vec<Self> {
        let widest = Self::widest().level;
        [Level::Baseline, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&level| level <= widest)
            .map(|level| Self { level })
            .collect()
    }

    /// The portable baseline: what the crate is compiled for.
    pub const BASELINE: Self = Self {
        level: Level::Baseline,
    };

    /// The instruction set's name, for logs and benchmark reports.
    pub fn name(self) -> &'static str {
        match self.level {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Runs `f` with the instruction set chosen. `f` (and what it inlines) is compiled for it
    /// only where it is inlined here, so it should be a closure marked `#[inline(always)]`
    /// calling `#[inline(always)]` code.
    #[inline(always)]
    pub(crate) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        match self.level {
            #[expect(unsafe_code, reason = "a call of a target-feature function")]
            // SAFETY: `Avx512` is chosen only where `detect` found AVX-512 F, DQ, VL and AVX2
            // on this processor.
            Level::Avx512 => return unsafe { run_avx512(f) },
            #[expect(unsafe_code, reason = "a call of a target-feature function")]
            // SAFETY: `Avx2` is chosen only where `detect` found AVX2 on this processor.
            Level::Avx2 => return unsafe { run_avx2(f) },
            Level::Baseline => {}
        }
        f()
    }
}

/// Whether the processor is Intel's (CPUID's vendor string).
fn is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0: the vendor's twelve characters in EBX, EDX, ECX.
        let vendor = std::arch::x86_64::__cpuid(0);
        [vendor.ebx, vendor.edx, vendor.ecx]
            == [*b"Genu", *b"ineI", *b"ntel"].map(u32::from_le_bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `f()` compiled with AVX2 (see [`Isa::run`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` compiled with AVX-512 F, DQ and VL (and AVX2; see [`Isa::run`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
#[inline(never)]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_closure_on_each() {
        let isas = Isa::available();
        assert_eq!(isas.first(), Some(&Isa::BASELINE));
        assert!(isas.contains(&Isa::detect()));
        assert_eq!(isas.last(), Some(&Isa::widest()));
        // AVX-512 is never chosen on Intel's processors.
        assert!(!(is_intel() && Isa::detect().level == Level::Avx512));
        for isa in isas {
            assert_eq!(isa.run(|| (1.0_f64 / 3.0).sqrt()), (1.0_f64 / 3.0).sqrt());
        }
    }

    /// Where the processor has them, the wider copies convert step times to clocks as the
    /// baseline does, to the tick, near the edges of truncation too.
    #[test]
    fn conversions_are_the_same_on_each() {
        let times: Vec<f64> = (0..4096)
            .map(|i| f64::from(i) * 0.999_999_9 + f64::from(i % 7) * 1e-9)
            .collect();
        #[inline(always)]
        fn ticks(times: &[f64]) -> Vec<u64> {
            times.iter().map(|&t| (t * 16e6) as i64 as u64).collect()
        }
        let baseline = ticks(&times);
        for isa in Isa::available() {
            let converted = isa.run(
                #[inline(always)]
                || ticks(&times),
            );
            assert_eq!(converted, baseline, "{}", isa.name());
        }
    }
}
