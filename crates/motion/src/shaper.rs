//! Input shaping (Klipper's `[input_shaper]`): the shaper families and the per-axis convolution.
//!
//! A shaper is a short train of impulses: amplitudes `A_i` at delays `T_i`, tuned to a resonance
//! frequency and damping ratio so that the ringing excited by one impulse is cancelled by the
//! others. [`ShaperSpec::pulses`] gives each family's train as Klipper's `shaper_defs.py`
//! computes it (MZV as its generalised train), and [`ShaperSpec`] also understands the
//! parameterised `mzv(n=…, t=…)` form.
//!
//! For step generation the train is prepared once ([`ShaperPulses`]): amplitudes normalised to
//! sum to one, the train mirrored in time (a position at `t` is built from the nominal motion
//! around `t` instead of before it) and shifted so that its amplitude-weighted mean time is zero.
//! The shift makes the shaper an identity for constant-velocity motion and removes any net delay.
//! The shaped coordinate of one Cartesian axis is then `x_s(t) = Σ a_i · x(t + t_i)`, with `x`
//! the nominal trapq position, and the stepper kinematics is evaluated at the shaped point
//! ([`AxisShapers::shaped_coord`]). Steps must be generated from `pre_active` seconds before a
//! move until `post_active` seconds after it, because the shaped path leaves and reaches each
//! point that much earlier and later.
//!
//! Everything here is pure arithmetic; the hot path ([`ShaperPulses::shaped_axis`]) does not
//! allocate. A step search asks for many times inside one entry: [`ShaperPulses::prepare_window`]
//! copies the entries its pulses can read from there, as the axis's quadratics, into a buffer
//! kept from search to search, and [`ShaperPulses::shaped_axis_in`] walks those (the same bits).

use std::fmt;
use std::str::FromStr;

use crate::trapq::{Coord, TrapMove, TrapQ};

/// The most pulses a prepared shaper holds (the limit of Klipper's step generator).
pub const MAX_PULSES: usize = 10;

/// Damping ratio used when the configuration names none.
pub const DEFAULT_DAMPING_RATIO: f64 = 0.1;

/// Shaper family used when the configuration names none.
pub const DEFAULT_SHAPER_TYPE: ShaperType = ShaperType::Mzv;

/// Residual vibration the EI family tolerates (1/20 = 5 %).
const EI_VIBRATION_TOLERANCE: f64 = 1.0 / 20.0;

/// Pivots smaller than this make the generalised MZV system count as singular.
const SINGULAR_PIVOT: f64 = 1e-10;

/// Why a shaper could not be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ShaperError {
    /// The name is not one of the known shaper families.
    #[error("Unsupported shaper type: {0}")]
    Unsupported(String),
    /// The arguments of a parameterised shaper (`mzv(n=4, t=0.8)`) are malformed or unusable.
    #[error("Failed to initialize shaper: {0}")]
    BadParameters(String),
    /// The train has more pulses than the step generator accepts.
    #[error("shaper has {0} pulses, at most 10 are supported")]
    TooManyPulses(usize),
    /// The amplitude and time lists have different lengths.
    #[error("shaper has {amplitudes} amplitudes but {times} pulse times")]
    LengthMismatch {
        /// Number of amplitudes given.
        amplitudes: usize,
        /// Number of times given.
        times: usize,
    },
    /// Pulse times are not strictly increasing.
    #[error("shaper pulse times must be strictly increasing")]
    TimesNotIncreasing,
    /// A value is not finite, or the amplitudes do not sum to a positive number.
    #[error("shaper amplitudes and times must be finite and the amplitudes must sum above 0")]
    BadValues,
}

/// A shaper family, named as Klipper names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaperType {
    /// Zero vibration: two pulses half a damped period apart.
    Zv,
    /// Modified ZV: three pulses over 3/4 of a damped period (Klipper's default).
    Mzv,
    /// Zero vibration and derivative: three pulses over one damped period.
    Zvd,
    /// Extra-insensitive, 5 % vibration tolerance: three pulses over one damped period.
    Ei,
    /// Two-hump extra-insensitive: four pulses over 1.5 periods.
    TwoHumpEi,
    /// Three-hump extra-insensitive: five pulses over two periods.
    ThreeHumpEi,
}

impl ShaperType {
    /// Every family, in Klipper's order.
    pub const ALL: [ShaperType; 6] = [
        ShaperType::Zv,
        ShaperType::Mzv,
        ShaperType::Zvd,
        ShaperType::Ei,
        ShaperType::TwoHumpEi,
        ShaperType::ThreeHumpEi,
    ];

    /// Klipper's name (`"zv"`, `"mzv"`, `"zvd"`, `"ei"`, `"2hump_ei"`, `"3hump_ei"`).
    pub const fn name(self) -> &'static str {
        match self {
            ShaperType::Zv => "zv",
            ShaperType::Mzv => "mzv",
            ShaperType::Zvd => "zvd",
            ShaperType::Ei => "ei",
            ShaperType::TwoHumpEi => "2hump_ei",
            ShaperType::ThreeHumpEi => "3hump_ei",
        }
    }

    /// Lowest frequency the calibration proposes for this family, Hz.
    pub const fn min_freq(self) -> f64 {
        match self {
            ShaperType::Zv => 21.0,
            ShaperType::Mzv => 23.0,
            ShaperType::Zvd | ShaperType::Ei => 29.0,
            ShaperType::TwoHumpEi => 39.0,
            ShaperType::ThreeHumpEi => 48.0,
        }
    }

    /// Highest damping ratio the family accepts.
    pub const fn max_damping_ratio(self) -> f64 {
        match self {
            ShaperType::Zv | ShaperType::Mzv | ShaperType::Zvd => 0.99,
            ShaperType::Ei => 0.4,
            ShaperType::TwoHumpEi => 0.3,
            ShaperType::ThreeHumpEi => 0.2,
        }
    }

    /// The family with this name, ignoring ASCII case and surrounding blanks.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ShaperType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ShaperType {
    type Err = ShaperError;

    /// A plain family name; parameterised forms are parsed by [`ShaperSpec`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| ShaperError::Unsupported(s.trim().to_owned()))
    }
}

/// Damped-oscillation constants shared by the families: `(√(1−ζ²), damped period 1/(f·√(1−ζ²)))`.
fn damped(freq_hz: f64, damping_ratio: f64) -> (f64, f64) {
    let df = (1.0 - damping_ratio * damping_ratio).sqrt();
    (df, 1.0 / (freq_hz * df))
}

/// Evaluates, per pulse, the cubic `c0 + c1·ζ + c2·ζ² + c3·ζ³` of a fitted coefficient row.
fn cubic_in(row: &[f64; 4], zeta: f64) -> f64 {
    ((row[3] * zeta + row[2]) * zeta + row[1]) * zeta + row[0]
}

/// Fitted time rows (in periods 1/f) of the two-hump EI shaper.
const TWO_HUMP_T: [[f64; 4]; 4] = [
    [0.0, 0.0, 0.0, 0.0],
    [0.49890, 0.16270, -0.54262, 6.16180],
    [0.99748, 0.18382, -1.58270, 8.17120],
    [1.49920, -0.09297, -0.28338, 1.85710],
];

/// Fitted amplitude rows of the two-hump EI shaper.
const TWO_HUMP_A: [[f64; 4]; 4] = [
    [0.16054, 0.76699, 2.26560, -1.22750],
    [0.33911, 0.45081, -2.58080, 1.73650],
    [0.34089, -0.61533, -0.68765, 0.42261],
    [0.15997, -0.60246, 1.00280, -0.93145],
];

/// Fitted time rows (in periods 1/f) of the three-hump EI shaper.
const THREE_HUMP_T: [[f64; 4]; 5] = [
    [0.0, 0.0, 0.0, 0.0],
    [0.49974, 0.23834, 0.44559, 12.4720],
    [0.99849, 0.29808, -2.36460, 23.3990],
    [1.49870, 0.10306, -2.01390, 17.0320],
    [1.99960, -0.28231, 0.61536, 5.40450],
];

/// Fitted amplitude rows of the three-hump EI shaper (the corrected table, with four columns in
/// the first row; Klipper before 2026-03-31 lost a comma there).
const THREE_HUMP_A: [[f64; 4]; 5] = [
    [0.11275, 0.76632, 3.29160, -1.44380],
    [0.23698, 0.61164, -2.57850, 4.85220],
    [0.30008, -0.19062, -2.14560, 0.13744],
    [0.23775, -0.73297, 0.46885, -2.08650],
    [0.11244, -0.45439, 0.96382, -1.46000],
];

/// A shaper given by per-pulse cubic fits in ζ; times are in periods of `1/f`.
fn fitted(
    freq_hz: f64,
    zeta: f64,
    t_rows: &[[f64; 4]],
    a_rows: &[[f64; 4]],
) -> (Vec<f64>, Vec<f64>) {
    let period = 1.0 / freq_hz;
    let a = a_rows.iter().map(|row| cubic_in(row, zeta)).collect();
    let t = t_rows
        .iter()
        .map(|row| cubic_in(row, zeta) * period)
        .collect();
    (a, t)
}

/// The impulse train of a family at `freq_hz` and `damping_ratio`: `(A, T)` with `T` in seconds
/// from the first pulse, amplitudes not yet normalised (as Klipper's `shaper_defs.py` gives them).
/// MZV here is the textbook closed form; Klipper computes it as the generalised train, whose
/// values differ in the last bits. So this stays private: everything outside takes
/// [`ShaperSpec::pulses`], which gives Klipper's MZV and these for the other families.
///
/// Damping ratios at or above 1 give non-finite values, which [`ShaperPulses::new`] rejects.
fn pulses(kind: ShaperType, freq_hz: f64, damping_ratio: f64) -> (Vec<f64>, Vec<f64>) {
    let zeta = damping_ratio;
    match kind {
        ShaperType::Zv => {
            let (df, t_d) = damped(freq_hz, zeta);
            let k = (-zeta * std::f64::consts::PI / df).exp();
            (vec![1.0, k], vec![0.0, 0.5 * t_d])
        }
        ShaperType::Mzv => {
            let (df, t_d) = damped(freq_hz, zeta);
            let k = (-0.75 * zeta * std::f64::consts::PI / df).exp();
            let edge = 1.0 - std::f64::consts::FRAC_1_SQRT_2;
            let middle = std::f64::consts::SQRT_2 - 1.0;
            (
                vec![edge, middle * k, edge * k * k],
                vec![0.0, 0.375 * t_d, 0.75 * t_d],
            )
        }
        ShaperType::Zvd => {
            let (df, t_d) = damped(freq_hz, zeta);
            let k = (-zeta * std::f64::consts::PI / df).exp();
            (vec![1.0, 2.0 * k, k * k], vec![0.0, 0.5 * t_d, t_d])
        }
        ShaperType::Ei => {
            let (_, t_d) = damped(freq_hz, zeta);
            let v = EI_VIBRATION_TOLERANCE;
            let first = (0.24968 + 0.24961 * v)
                + ((0.80008 + 1.23328 * v) + (0.49599 + 3.17316 * v) * zeta) * zeta;
            let last = (0.25149 + 0.21474 * v)
                + ((-0.83249 + 1.41498 * v) + (0.85181 - 4.90094 * v) * zeta) * zeta;
            let middle = 1.0 - first - last;
            let t2 = 0.4999
                + (((0.46159 + 8.57843 * v) * v)
                    + (((4.26169 - 108.644 * v) * v) + ((1.75601 + 336.989 * v) * v) * zeta)
                        * zeta)
                    * zeta;
            (vec![first, middle, last], vec![0.0, t2 * t_d, t_d])
        }
        ShaperType::TwoHumpEi => fitted(freq_hz, zeta, &TWO_HUMP_T, &TWO_HUMP_A),
        ShaperType::ThreeHumpEi => fitted(freq_hz, zeta, &THREE_HUMP_T, &THREE_HUMP_A),
    }
}

/// Parameters of a generalised MZV shaper: `n` equally spaced pulses spanning `t` damped periods.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MzvParams {
    /// Number of pulses (3 to [`MAX_PULSES`]).
    pub n: usize,
    /// Duration of the train in damped periods (below `(n − 1)/2`).
    pub t: f64,
}

impl MzvParams {
    /// Klipper's default MZV: three pulses over 0.75 periods.
    pub const DEFAULT: MzvParams = MzvParams { n: 3, t: 0.75 };

    /// Parameters from Klipper's arguments: `tau` (the projected duration for n → ∞), when
    /// non-zero, decides `t`; `t` and `tau` both zero mean the default 0.75.
    pub fn resolve(n: usize, t: f64, tau: f64) -> Self {
        let t = if tau != 0.0 {
            let n = n as f64;
            tau * (n - 1.0) / (n + 2.0 * tau - 2.0)
        } else if t == 0.0 {
            0.75
        } else {
            t
        };
        MzvParams { n, t }
    }
}

/// Solves `m · x = rhs` for a square `m`, `None` when a pivot is (numerically) zero — with
/// the elimination order of Klipper's `mathutil.gaussian_solve`, so that the amplitudes agree
/// to the last bit (a different order moves them by an ulp, and a shaped step by a tick now and
/// then). The last column is eliminated first: its pivot is the largest magnitude among the rows
/// up to it (the first such row), that row is swapped in and scaled by the pivot's reciprocal,
/// and the rows above lose their multiple of it and their last column. Then the lower
/// triangle left (unit diagonal) is solved from the first row down, each row's known terms
/// summed in column order.
fn solve_linear(m: &mut [Vec<f64>], rhs: &mut [f64]) -> Option<Vec<f64>> {
    let size = rhs.len();
    for i in (0..size).rev() {
        let mut pivot_row = 0;
        for j in 1..=i {
            if m[j][i].abs() > m[pivot_row][i].abs() {
                pivot_row = j;
            }
        }
        if pivot_row != i {
            m.swap(i, pivot_row);
            rhs.swap(i, pivot_row);
        }
        let pivot = m[i][i];
        if pivot.is_nan() || pivot.abs() < SINGULAR_PIVOT {
            return None;
        }
        let recipr = 1.0 / pivot;
        m[i].truncate(i);
        for v in &mut m[i] {
            *v *= recipr;
        }
        rhs[i] *= recipr;
        let (above, from_i) = m.split_at_mut(i);
        let row_i = &from_i[0];
        for (j, row_j) in above.iter_mut().enumerate() {
            let c = row_j[i];
            row_j.truncate(i);
            for (v, &p) in row_j.iter_mut().zip(row_i) {
                *v -= c * p;
            }
            rhs[j] -= c * rhs[i];
        }
    }
    let mut x = rhs.to_vec();
    for i in 1..size {
        let mut known = 0.0;
        for (k, &coef) in m[i].iter().enumerate() {
            known += coef * x[k];
        }
        x[i] -= known;
    }
    Some(x)
}

/// Undamped generalised MZV train: amplitudes summing to one at times in damped periods.
///
/// The amplitudes are the least-squares solution of "sum to one" plus "zero response" at
/// `n − 1` frequencies `1 + i/τ` (τ the train's projected duration for n → ∞); the system is
/// consistent, so this is its exact solution.
fn mzv_unit_train(params: MzvParams) -> Result<(Vec<f64>, Vec<f64>), ShaperError> {
    let MzvParams { n, t } = params;
    if n < 3 {
        return Err(ShaperError::BadParameters(format!(
            "Too small n={n}, must be at least 3"
        )));
    }
    if n > MAX_PULSES {
        return Err(ShaperError::TooManyPulses(n));
    }
    let nf = n as f64;
    if !t.is_finite() || t <= 0.0 {
        return Err(ShaperError::BadParameters(format!(
            "shaper duration t={t} must be a positive number"
        )));
    }
    if nf <= 2.0 * t + 1.0 + 1e-7 {
        return Err(ShaperError::BadParameters(format!(
            "Too large t={t:.6} for n={n}, must be less than {:.6}",
            0.5 * (nf - 1.0)
        )));
    }
    let tau = t * (nf - 2.0) / (nf - 2.0 * t - 1.0);
    let times: Vec<f64> = (0..n).map(|j| j as f64 * t / (nf - 1.0)).collect();
    // Rows of the (2n − 1) × n system: all ones, then a cosine and a sine row per frequency.
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(2 * n - 1);
    rows.push(vec![1.0; n]);
    for i in 0..n - 1 {
        let omega = 2.0 * std::f64::consts::PI * (1.0 + i as f64 / tau);
        rows.push(times.iter().map(|&tj| (omega * tj).cos()).collect());
        rows.push(times.iter().map(|&tj| (omega * tj).sin()).collect());
    }
    // Normal equations: (Mᵀ M) A = Mᵀ F, and F = (1, 0, …, 0) makes Mᵀ F the all-ones row.
    let mut normal: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            (0..n)
                .map(|k| rows.iter().map(|r| r[j] * r[k]).sum())
                .collect()
        })
        .collect();
    let mut rhs = vec![1.0; n];
    let amplitudes = solve_linear(&mut normal, &mut rhs).ok_or_else(|| {
        ShaperError::BadParameters(format!("Ill-formed shaper with n={n}, t={t:.6}"))
    })?;
    if amplitudes.iter().any(|a| !a.is_finite() || *a < -0.00001) {
        return Err(ShaperError::BadParameters(format!(
            "Negative-valued shaper with n={n}, t={t:.6}"
        )));
    }
    Ok((amplitudes, times))
}

/// A generalised MZV train at `freq_hz` and `damping_ratio` (Klipper's `mzv(n=…, t=…)`).
pub fn mzv_pulses(
    params: MzvParams,
    freq_hz: f64,
    damping_ratio: f64,
) -> Result<(Vec<f64>, Vec<f64>), ShaperError> {
    let (mut a, mut t) = mzv_unit_train(params)?;
    let (df, t_d) = damped(freq_hz, damping_ratio);
    // Each step of t/(n − 1) damped periods decays the oscillation by this factor.
    let decay = (-2.0 * params.t * damping_ratio * std::f64::consts::PI
        / ((params.n as f64 - 1.0) * df))
        .exp();
    let mut weight = decay;
    for (ai, ti) in a.iter_mut().zip(t.iter_mut()).skip(1) {
        *ti *= t_d;
        *ai *= weight;
        weight *= decay;
    }
    Ok((a, t))
}

/// A shaper as configured: a family, plus the arguments of a parameterised MZV.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShaperSpec {
    /// The family.
    pub kind: ShaperType,
    /// For `mzv(…)`: the generalised parameters; `None` is the classic three-pulse MZV (and
    /// the only choice for the other families).
    pub mzv: Option<MzvParams>,
}

impl Default for ShaperSpec {
    fn default() -> Self {
        Self::plain(DEFAULT_SHAPER_TYPE)
    }
}

impl From<ShaperType> for ShaperSpec {
    fn from(kind: ShaperType) -> Self {
        Self::plain(kind)
    }
}

/// One argument value of a parameterised shaper, kept as written (integer or decimal).
#[derive(Clone, Copy)]
enum ArgValue {
    Int(usize),
    Real(f64),
}

impl ArgValue {
    fn parse(text: &str) -> Result<Self, ShaperError> {
        let bad = || ShaperError::BadParameters(format!("invalid shaper parameter value '{text}'"));
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(ArgValue::Int).map_err(|_| bad());
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let v: f64 = text.parse().map_err(|_| bad())?;
            return Ok(ArgValue::Real(v));
        }
        Err(bad())
    }

    fn count(self, name: &str) -> Result<usize, ShaperError> {
        match self {
            ArgValue::Int(n) => Ok(n),
            ArgValue::Real(_) => Err(ShaperError::BadParameters(format!(
                "shaper parameter {name} must be an integer"
            ))),
        }
    }

    fn real(self) -> f64 {
        match self {
            ArgValue::Int(n) => n as f64,
            ArgValue::Real(v) => v,
        }
    }
}

impl ShaperSpec {
    /// A family with its standard definition.
    pub const fn plain(kind: ShaperType) -> Self {
        Self { kind, mzv: None }
    }

    /// Parses `"mzv"`, `"3HUMP_EI"` or a parameterised `"mzv(n=4, t=0.8)"`, `"mzv(5, 1.2)"`,
    /// `"mzv(n=4, tau=1.0)"` (case-insensitive). Positional arguments are `n, t, tau`; named and
    /// positional arguments may not be mixed; only MZV takes arguments. The generalised train is
    /// solved here, so an unusable `n`/`t` is reported at parse time as Klipper does at config
    /// time.
    pub fn parse(text: &str) -> Result<Self, ShaperError> {
        let lower = text.trim().to_ascii_lowercase();
        let Some(open) = lower.find('(') else {
            return ShaperType::from_name(&lower)
                .map(Self::plain)
                .ok_or_else(|| ShaperError::Unsupported(text.trim().to_owned()));
        };
        let name = lower[..open].trim_end();
        let kind = ShaperType::from_name(name)
            .filter(|_| lower.ends_with(')') && !name.is_empty())
            .ok_or_else(|| ShaperError::Unsupported(text.trim().to_owned()))?;
        let args = lower[open + 1..lower.len() - 1].trim();
        if args.is_empty() {
            return Ok(Self::plain(kind));
        }
        if kind != ShaperType::Mzv {
            return Err(ShaperError::BadParameters(format!(
                "shaper {kind} takes no parameters"
            )));
        }
        let (mut n, mut t, mut tau) = (3usize, 0.0f64, 0.0f64);
        let (mut named, mut positional) = (false, 0usize);
        for item in args.split(',') {
            let item = item.trim();
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => {
                    named = true;
                    (key.trim(), ArgValue::parse(value.trim())?)
                }
                None => {
                    let key = match positional {
                        0 => "n",
                        1 => "t",
                        2 => "tau",
                        _ => {
                            return Err(ShaperError::BadParameters(
                                "too many shaper parameters (mzv takes n, t, tau)".to_owned(),
                            ));
                        }
                    };
                    positional += 1;
                    (key, ArgValue::parse(item)?)
                }
            };
            if named && positional > 0 {
                return Err(ShaperError::BadParameters(
                    "Mixing named and non-named shaper parameters is not supported".to_owned(),
                ));
            }
            match key {
                "n" => n = value.count("n")?,
                "t" => t = value.real(),
                "tau" => tau = value.real(),
                other => {
                    return Err(ShaperError::BadParameters(format!(
                        "unknown shaper parameter '{other}' (mzv takes n, t, tau)"
                    )));
                }
            }
        }
        let params = MzvParams::resolve(n, t, tau);
        mzv_unit_train(params)?;
        Ok(Self {
            kind,
            mzv: Some(params),
        })
    }

    /// The impulse train at `freq_hz` and `damping_ratio`: `(A, T)` with `T` in seconds from
    /// the first pulse, amplitudes not yet normalised, to the bit as Klipper's
    /// `shaper_defs.py` gives them.
    pub fn pulses(
        &self,
        freq_hz: f64,
        damping_ratio: f64,
    ) -> Result<(Vec<f64>, Vec<f64>), ShaperError> {
        match (self.kind, self.mzv) {
            // Klipper computes the classic MZV as the generalised one with its defaults
            // (shaper_defs.py `get_mzv_shaper`: amplitudes from a least-squares solve, decay
            // `exp(−2·t·ζ·π/((n − 1)·df))`), whose values differ from the closed formulas in
            // the last bits — enough to move a step by a tick now and then.
            (ShaperType::Mzv, params) => {
                mzv_pulses(params.unwrap_or(MzvParams::DEFAULT), freq_hz, damping_ratio)
            }
            (kind, _) => Ok(pulses(kind, freq_hz, damping_ratio)),
        }
    }
}

impl FromStr for ShaperSpec {
    type Err = ShaperError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ShaperSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mzv {
            Some(MzvParams { n, t }) if self.kind == ShaperType::Mzv => {
                write!(f, "mzv(n={n}, t={t})")
            }
            _ => f.write_str(self.kind.name()),
        }
    }
}

/// A shaper prepared for step generation: at most [`MAX_PULSES`] pulses `(t_i, a_i)` with
/// `Σ a_i = 1`, mirrored in time and shifted so that `Σ a_i·t_i = 0`, sorted by time.
///
/// The empty train ([`ShaperPulses::none`]) means "no shaping on this axis".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShaperPulses {
    /// Number of pulses in use.
    count: usize,
    /// Index of the first pulse that looks into the future (time > 0).
    first_future: usize,
    /// Pulse times relative to the evaluated instant, seconds, increasing.
    times: [f64; MAX_PULSES],
    /// Normalised amplitudes.
    amps: [f64; MAX_PULSES],
}

impl Default for ShaperPulses {
    fn default() -> Self {
        Self::none()
    }
}

/// Position of entry `index` at `move_time`, treating the time before the first real entry as
/// standing still at that entry's start (nothing older is kept).
#[inline]
fn axis_at(tq: &TrapQ, index: usize, axis: usize, move_time: f64, clamp_start: bool) -> f64 {
    let t = if clamp_start && move_time < 0.0 {
        0.0
    } else {
        move_time
    };
    tq.get(index).axis_position(axis, t)
}

impl ShaperPulses {
    /// No shaping.
    pub const fn none() -> Self {
        Self {
            count: 0,
            first_future: 0,
            times: [0.0; MAX_PULSES],
            amps: [0.0; MAX_PULSES],
        }
    }

    /// Prepares a train given as `shaper_defs` does (amplitudes `a`, times `t` in seconds,
    /// strictly increasing). An empty train gives [`ShaperPulses::none`].
    pub fn new(a: &[f64], t: &[f64]) -> Result<Self, ShaperError> {
        if a.len() != t.len() {
            return Err(ShaperError::LengthMismatch {
                amplitudes: a.len(),
                times: t.len(),
            });
        }
        let count = a.len();
        if count > MAX_PULSES {
            return Err(ShaperError::TooManyPulses(count));
        }
        if count == 0 {
            return Ok(Self::none());
        }
        if a.iter().chain(t).any(|v| !v.is_finite()) {
            return Err(ShaperError::BadValues);
        }
        if t.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ShaperError::TimesNotIncreasing);
        }
        let sum: f64 = a.iter().sum();
        if sum <= 0.0 || !sum.is_finite() {
            return Err(ShaperError::BadValues);
        }
        let scale = 1.0 / sum;
        let mut out = Self::none();
        out.count = count;
        // Mirror the train: the last pulse of the definition acts on the earliest time.
        for (i, (&ai, &ti)) in a.iter().zip(t).enumerate() {
            out.amps[count - 1 - i] = ai * scale;
            out.times[count - 1 - i] = -ti;
        }
        // Centre it: zero amplitude-weighted mean time.
        let mean: f64 = (0..count).map(|i| out.amps[i] * out.times[i]).sum();
        for ti in &mut out.times[..count] {
            *ti -= mean;
        }
        out.first_future = out.times[..count]
            .iter()
            .position(|&ti| ti > 0.0)
            .unwrap_or(count);
        Ok(out)
    }

    /// The prepared train of `spec` at `freq_hz` and `damping_ratio`; a frequency of 0 means no
    /// shaping (as `shaper_freq_x: 0`). The damping ratio is not checked against the family's
    /// maximum here (the config and `SET_INPUT_SHAPER` layers do that).
    pub fn from_spec(
        spec: &ShaperSpec,
        freq_hz: f64,
        damping_ratio: f64,
    ) -> Result<Self, ShaperError> {
        if freq_hz == 0.0 {
            return Ok(Self::none());
        }
        let (a, t) = spec.pulses(freq_hz, damping_ratio)?;
        Self::new(&a, &t)
    }

    /// Number of pulses.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether this is the empty train (no shaping).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Pulse times relative to the evaluated instant, seconds, increasing.
    pub fn times(&self) -> &[f64] {
        &self.times[..self.count]
    }

    /// Normalised amplitudes, in the order of [`ShaperPulses::times`].
    pub fn amplitudes(&self) -> &[f64] {
        &self.amps[..self.count]
    }

    /// How far ahead of the evaluated instant the train looks (the latest pulse time), seconds:
    /// steps must be generated this long before a move starts.
    pub fn pre_active(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.times[self.count - 1]
        }
    }

    /// How far behind the evaluated instant the train looks (minus the earliest pulse time),
    /// seconds: steps must be generated this long after a move ends.
    pub fn post_active(&self) -> f64 {
        if self.count == 0 { 0.0 } else { -self.times[0] }
    }

    /// The shaped coordinate `Σ a_i · x(t + t_i)` of `axis` (0 = x, 1 = y, 2 = z) at `move_time`
    /// seconds into trapq entry `index`, walking to earlier and later entries as the pulses
    /// need. With no pulses, the plain position of that entry.
    ///
    /// The caller keeps the tail sentinel current ([`TrapQ::check_sentinels`]) and `move_time`
    /// within the entry, as step generation does. Outside that contract the result is still
    /// defined (no panic): an index past the tail is taken as the tail, and time before the
    /// first queued entry reads as standing still at that entry's start.
    #[inline]
    pub fn shaped_axis(&self, tq: &TrapQ, index: usize, axis: usize, move_time: f64) -> f64 {
        let tail = tq.tail_index();
        let index = index.min(tail);
        if self.count == 0 {
            return tq.get(index).axis_position(axis, move_time);
        }
        let mut total = 0.0;
        // Past-looking pulses, latest first, so the walk only ever goes backwards. The pulse's
        // time is added to `t` and taken off again after each pulse, and the spans of the
        // entries walked over stay added: Klipper's floating-point operations in its order
        // (kin_shaper.c), so that a step's search takes the same guesses to the last bit.
        let (mut at, mut t) = (index, move_time);
        for i in (0..self.first_future).rev() {
            t += self.times[i];
            let mut clamp = false;
            while t < 0.0 {
                if at <= 1 {
                    clamp = true;
                    break;
                }
                at -= 1;
                t += tq.get(at).move_t;
            }
            total += self.amps[i] * axis_at(tq, at, axis, t, clamp);
            t -= self.times[i];
        }
        // Future-looking pulses, earliest first, walking forwards from the same entry.
        let (mut at, mut t) = (index, move_time);
        for i in self.first_future..self.count {
            t += self.times[i];
            while at < tail && t > tq.get(at).move_t {
                t -= tq.get(at).move_t;
                at += 1;
            }
            total += self.amps[i] * tq.get(at).axis_position(axis, t);
            t -= self.times[i];
        }
        total
    }

    /// Sets `window` up for [`ShaperPulses::shaped_axis_in`] on `axis` at times `start..=end`
    /// into entry `index`: the entries its pulses read from there (those the walks for the
    /// earliest and the latest time pass), each as the axis's quadratic. Empty (every time
    /// passed on to `shaped_axis`) when a bound is not a number.
    pub fn prepare_window(
        &self,
        tq: &TrapQ,
        index: usize,
        axis: usize,
        (start, end): (f64, f64),
        window: &mut AxisWindow,
    ) {
        window.segments.clear();
        window.ready = false;
        if start.is_nan() || end.is_nan() {
            return;
        }
        let tail = tq.tail_index();
        let index = index.min(tail);
        // The lowest entry the walk back from `start` reaches, the highest the walk forward
        // from `end` does (with the pulses' own operations, as `shaped_axis` walks).
        let (mut first, mut t) = (index, start);
        for i in (0..self.first_future).rev() {
            t += self.times[i];
            while t < 0.0 && first > 1 {
                first -= 1;
                t += tq.get(first).move_t;
            }
            t -= self.times[i];
        }
        let (mut last, mut t) = (index, end);
        for i in self.first_future..self.count {
            t += self.times[i];
            while last < tail && t > tq.get(last).move_t {
                t -= tq.get(last).move_t;
                last += 1;
            }
            t -= self.times[i];
        }
        window.index = index;
        window.axis = axis;
        window.start = start;
        window.end = end;
        window.first = first;
        window.tail = tail;
        window
            .segments
            .extend((first..=last).map(|at| AxisSegment::of(tq.get(at), axis)));
        window.ready = true;
    }

    /// [`ShaperPulses::shaped_axis`] with the entries from `window` (made by
    /// [`ShaperPulses::prepare_window`] for this axis): the same walks and operations on the
    /// same values, so the same bits. Times outside the window's, other entries or axes, and a
    /// walk that would leave it, go to `shaped_axis`.
    #[inline]
    pub fn shaped_axis_in(
        &self,
        tq: &TrapQ,
        window: &AxisWindow,
        index: usize,
        axis: usize,
        move_time: f64,
    ) -> f64 {
        if window.ready
            && index == window.index
            && axis == window.axis
            && move_time >= window.start
            && move_time <= window.end
            && let Some(total) = self.walk_window(window, move_time)
        {
            return total;
        }
        self.shaped_axis(tq, index, axis, move_time)
    }

    /// `shaped_axis`'s walks over `window`'s entries; `None` where one would leave them.
    #[inline(always)]
    #[expect(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "the walk forward stops where `shaped_axis`'s loop condition fails (a NaN too)"
    )]
    fn walk_window(&self, window: &AxisWindow, move_time: f64) -> Option<f64> {
        let segment = |at: usize| window.segments.get(at.checked_sub(window.first)?);
        if self.count == 0 {
            return Some(segment(window.index)?.position(move_time));
        }
        let mut total = 0.0;
        let (mut at, mut t) = (window.index, move_time);
        for i in (0..self.first_future).rev() {
            t += self.times[i];
            let mut clamp = false;
            while t < 0.0 {
                if at <= 1 {
                    clamp = true;
                    break;
                }
                at -= 1;
                t += segment(at)?.move_t;
            }
            let at_t = if clamp && t < 0.0 { 0.0 } else { t };
            total += self.amps[i] * segment(at)?.position(at_t);
            t -= self.times[i];
        }
        let (mut at, mut t) = (window.index, move_time);
        for i in self.first_future..self.count {
            t += self.times[i];
            while at < window.tail {
                let move_t = segment(at)?.move_t;
                if !(t > move_t) {
                    break;
                }
                t -= move_t;
                at += 1;
            }
            total += self.amps[i] * segment(at)?.position(t);
            t -= self.times[i];
        }
        Some(total)
    }
}

/// What [`ShaperPulses::shaped_axis_in`] keeps for the times of one step search: the entries
/// an axis's pulses read from one entry, each as that axis's quadratic. Its buffer keeps its
/// size from search to search.
#[derive(Clone, Debug, Default)]
pub struct AxisWindow {
    ready: bool,
    index: usize,
    axis: usize,
    /// The times (into entry `index`) it serves.
    start: f64,
    end: f64,
    /// The trapq index of `segments[0]`.
    first: usize,
    /// The trapq's tail index.
    tail: usize,
    segments: Vec<AxisSegment>,
}

/// One trapq entry along one axis: `p + r·((v + half_accel·t)·t)` with the operations of
/// [`TrapMove::axis_position`], and its duration.
#[derive(Clone, Copy, Debug, Default)]
struct AxisSegment {
    move_t: f64,
    p: f64,
    r: f64,
    v: f64,
    half_accel: f64,
}

impl AxisSegment {
    fn of(m: &TrapMove, axis: usize) -> Self {
        Self {
            move_t: m.move_t,
            p: m.start_pos.axis(axis),
            r: m.axes_r.axis(axis),
            v: m.start_v,
            half_accel: m.half_accel,
        }
    }

    #[inline(always)]
    fn position(&self, t: f64) -> f64 {
        self.p + self.r * ((self.v + self.half_accel * t) * t)
    }
}

/// Which Cartesian axes a stepper's kinematics reads (Klipper's `AF_X | AF_Y | AF_Z`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ActiveAxes {
    /// The stepper depends on X.
    pub x: bool,
    /// The stepper depends on Y.
    pub y: bool,
    /// The stepper depends on Z.
    pub z: bool,
}

impl ActiveAxes {
    /// X only (a Cartesian X stepper).
    pub const X: ActiveAxes = ActiveAxes::new(true, false, false);
    /// Y only.
    pub const Y: ActiveAxes = ActiveAxes::new(false, true, false);
    /// Z only.
    pub const Z: ActiveAxes = ActiveAxes::new(false, false, true);
    /// X and Y (CoreXY steppers).
    pub const XY: ActiveAxes = ActiveAxes::new(true, true, false);
    /// All three (delta towers).
    pub const XYZ: ActiveAxes = ActiveAxes::new(true, true, true);

    /// Flags from their parts.
    pub const fn new(x: bool, y: bool, z: bool) -> Self {
        Self { x, y, z }
    }

    /// Whether `axis` (0 = x, 1 = y, 2 = z) is read; other indices are not.
    pub const fn has(self, axis: usize) -> bool {
        match axis {
            0 => self.x,
            1 => self.y,
            2 => self.z,
            _ => false,
        }
    }
}

/// The shapers of the three Cartesian axes (an empty train leaves its axis unshaped).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AxisShapers {
    /// X axis shaper.
    pub x: ShaperPulses,
    /// Y axis shaper.
    pub y: ShaperPulses,
    /// Z axis shaper.
    pub z: ShaperPulses,
}

impl AxisShapers {
    /// No shaping on any axis.
    pub const fn none() -> Self {
        Self {
            x: ShaperPulses::none(),
            y: ShaperPulses::none(),
            z: ShaperPulses::none(),
        }
    }

    /// The shaper of `axis` (0 = x, 1 = y, anything else = z).
    pub fn axis(&self, axis: usize) -> &ShaperPulses {
        match axis {
            0 => &self.x,
            1 => &self.y,
            _ => &self.z,
        }
    }

    /// Whether any axis that `axes` reads is shaped.
    pub fn shapes(&self, axes: ActiveAxes) -> bool {
        (0..3).any(|axis| axes.has(axis) && !self.axis(axis).is_empty())
    }

    /// The point a stepper reading `axes` sees at `move_time` into entry `index`: the nominal
    /// position, with each read axis that has a shaper replaced by its shaped coordinate.
    pub fn shaped_coord(
        &self,
        tq: &TrapQ,
        index: usize,
        move_time: f64,
        axes: ActiveAxes,
    ) -> Coord {
        let index = index.min(tq.tail_index());
        let mut point = tq.get(index).coord(move_time);
        for axis in 0..3 {
            let shaper = self.axis(axis);
            if axes.has(axis) && !shaper.is_empty() {
                point.set_axis(axis, shaper.shaped_axis(tq, index, axis, move_time));
            }
        }
        point
    }

    /// Step-generation lead a stepper reading `axes` needs: the largest `pre_active` of its
    /// shaped axes (0 when none is shaped).
    pub fn pre_active(&self, axes: ActiveAxes) -> f64 {
        (0..3)
            .filter(|&axis| axes.has(axis) && !self.axis(axis).is_empty())
            .map(|axis| self.axis(axis).pre_active())
            .fold(0.0, f64::max)
    }

    /// Step-generation lag a stepper reading `axes` needs: the largest `post_active` of its
    /// shaped axes (0 when none is shaped).
    pub fn post_active(&self, axes: ActiveAxes) -> f64 {
        (0..3)
            .filter(|&axis| axes.has(axis) && !self.axis(axis).is_empty())
            .map(|axis| self.axis(axis).post_active())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Before the first entry kept, a past-looking pulse reads the axis standing at that
    /// entry's start (nothing older is queued).
    #[test]
    fn pulses_before_the_queue_read_its_first_entry_at_rest() {
        let mut q = TrapQ::new();
        // From x = 100 mm at 1 s: 20 ms accelerating to 50 mm/s, then cruising.
        q.append(
            1.0,
            0.02,
            0.5,
            0.0,
            Coord::new(100.0, 0.0, 0.0),
            Coord::new(1.0, 0.0, 0.0),
            0.0,
            50.0,
            2500.0,
        );
        q.check_sentinels();
        // The null move before it leaves the queue, as step generation's flushes send it.
        q.finalize_moves(q.get(1).end_time(), 0.0);
        let first = *q.get(1);
        assert_eq!((first.print_time, first.start_pos.x), (1.0, 100.0));
        let pulses = ShaperPulses::from_spec(&ShaperSpec::plain(ShaperType::Zvd), 40.0, 0.1)
            .expect("a valid shaper");
        let (times, amps) = (pulses.times(), pulses.amplitudes());
        assert!(times[0] < -0.005, "{times:?}");
        let move_time = 0.005;
        // Each pulse on its own: before the queue, at rest at its start.
        let want: f64 = times
            .iter()
            .zip(amps)
            .map(|(&ti, &a)| {
                let t = move_time + ti;
                a * if t < 0.0 {
                    100.0
                } else {
                    first.axis_position(0, t)
                }
            })
            .sum();
        let got = pulses.shaped_axis(&q, 1, 0, move_time);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    /// MZV is Klipper's generalised train with its defaults, bit for bit: the values
    /// `shaper_defs.get_mzv_shaper(28.0, 0.1)` returns (Klipper 84104bb). The textbook formulas
    /// give amplitudes an ulp away, which moved a shaped step by a tick in 14 of 402 hunt cases.
    #[test]
    fn mzv_is_klippers_generalised_train_to_the_bit() {
        let cases = [
            (28.0, [0.0, 0.013460327882935878, 0.026920655765871757]),
            (27.2, [0.0, 0.013856219879492815, 0.02771243975898563]),
        ];
        for (freq, times) in cases {
            let (a, t) = ShaperSpec::plain(ShaperType::Mzv)
                .pulses(freq, 0.1)
                .expect("valid");
            // (The amplitudes do not depend on the frequency.)
            assert_eq!(
                a,
                [0.2928932188134524, 0.3268741504100068, 0.18239874354058666],
                "{freq} Hz"
            );
            assert_eq!(t, times, "{freq} Hz");
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Normalised amplitudes and times in ms of a family's train.
    fn normalised(kind: ShaperType, f: f64, zeta: f64) -> (Vec<f64>, Vec<f64>) {
        let (a, t) = pulses(kind, f, zeta);
        let sum: f64 = a.iter().sum();
        (
            a.iter().map(|x| x / sum).collect(),
            t.iter().map(|x| x * 1000.0).collect(),
        )
    }

    #[test]
    fn check_table_at_50_hz_and_damping_0_1() {
        // (family, A, T in ms, decimals of T) from the protocol notes §8.3.
        let table: [(ShaperType, &[f64], &[f64], i32); 6] = [
            (ShaperType::Zv, &[0.57829, 0.42171], &[0.0, 10.0504], 4),
            (
                ShaperType::Mzv,
                &[0.36513, 0.40749, 0.22738],
                &[0.0, 7.5378, 15.0756],
                4,
            ),
            (
                ShaperType::Zvd,
                &[0.33441, 0.48774, 0.17784],
                &[0.0, 10.0504, 20.1008],
                4,
            ),
            (
                ShaperType::Ei,
                &[0.35488, 0.45300, 0.19212],
                &[0.0, 10.1448, 20.1008],
                4,
            ),
            (
                ShaperType::TwoHumpEi,
                &[0.25854, 0.35994, 0.27276, 0.10877],
                &[0.0, 10.3181, 20.1641, 29.7785],
                4,
            ),
            (
                ShaperType::ThreeHumpEi,
                &[0.22085, 0.27721, 0.25970, 0.16706, 0.07518],
                &[0.0, 10.81, 20.561, 30.118, 39.6585],
                2,
            ),
        ];
        for (kind, want_a, want_t, decimals) in table {
            let (a, t) = normalised(kind, 50.0, 0.1);
            assert_eq!(a.len(), want_a.len(), "{kind}");
            assert_eq!(t.len(), want_t.len(), "{kind}");
            for (got, want) in a.iter().zip(want_a) {
                assert!(close(*got, *want, 0.5e-5), "{kind}: A {got} vs {want}");
            }
            let tol = 0.5 * 10f64.powi(-decimals);
            for (got, want) in t.iter().zip(want_t) {
                assert!(close(*got, *want, tol), "{kind}: T {got} ms vs {want}");
            }
        }
    }

    #[test]
    fn full_precision_values_match_klipper() {
        // shaper_defs.py (corrected 3HUMP_EI table) at 50 Hz, ζ = 0.1, A normalised, T in s.
        let want: [(ShaperType, &[f64], &[f64]); 3] = [
            (
                ShaperType::Ei,
                &[0.35488138, 0.45299809, 0.19212052999999998],
                &[0.0, 0.010144802972942825, 0.02010075630518424],
            ),
            (
                ShaperType::TwoHumpEi,
                &[
                    0.25853547627368606,
                    0.3599356952378699,
                    0.2727638204274605,
                    0.10876500806098358,
                ],
                &[
                    0.0,
                    0.010318111999999999,
                    0.020164124000000002,
                    0.029778526000000003,
                ],
            ),
            (
                ShaperType::ThreeHumpEi,
                &[
                    0.22085441202023554,
                    0.27721146612300746,
                    0.25969968931170173,
                    0.16705516037295395,
                    0.07517927217210128,
                ],
                &[
                    0.0,
                    0.010810038,
                    0.020561020000000003,
                    0.03011798,
                    0.039658542,
                ],
            ),
        ];
        for (kind, want_a, want_t) in want {
            let (a, t) = pulses(kind, 50.0, 0.1);
            let sum: f64 = a.iter().sum();
            for (got, want) in a.iter().zip(want_a) {
                assert!(close(got / sum, *want, 1e-12), "{kind}");
            }
            for (got, want) in t.iter().zip(want_t) {
                assert!(close(*got, *want, 1e-15), "{kind}");
            }
        }
    }

    #[test]
    fn names_limits_and_parsing() {
        for kind in ShaperType::ALL {
            assert_eq!(kind.name().parse::<ShaperType>(), Ok(kind));
            assert_eq!(kind.name().to_uppercase().parse::<ShaperType>(), Ok(kind));
            assert_eq!(ShaperSpec::parse(kind.name()), Ok(ShaperSpec::plain(kind)));
        }
        assert_eq!(
            ShaperType::from_name(" 2HUMP_EI "),
            Some(ShaperType::TwoHumpEi)
        );
        assert_eq!(ShaperType::ThreeHumpEi.min_freq(), 48.0);
        assert_eq!(ShaperType::Ei.max_damping_ratio(), 0.4);
        assert_eq!(ShaperType::Zv.min_freq(), 21.0);
        assert_eq!(ShaperSpec::default().kind, ShaperType::Mzv);
        assert_eq!(
            "bogus".parse::<ShaperType>(),
            Err(ShaperError::Unsupported("bogus".to_owned()))
        );
        assert!(matches!(
            ShaperSpec::parse("bogus(n=3)"),
            Err(ShaperError::Unsupported(_))
        ));
        assert!(matches!(
            "mzv(n=4)".parse::<ShaperType>(),
            Err(ShaperError::Unsupported(_))
        ));
        assert_eq!(
            ShaperSpec::parse("MZV()"),
            Ok(ShaperSpec::plain(ShaperType::Mzv))
        );
        for bad in [
            "zv(n=3)",
            "mzv(n=2)",
            "mzv(n=4, t=1.5)",
            "mzv(4, t=0.8)",
            "mzv(n=4.0)",
            "mzv(n=11, t=0.8)",
            "mzv(q=1)",
            "mzv(1, 2, 3, 4)",
            "mzv(n=)",
            "mzv(n=4,,)",
        ] {
            assert!(ShaperSpec::parse(bad).is_err(), "{bad}");
        }
        let spec = ShaperSpec::parse("mzv(n=4, t=0.8)").expect("valid");
        assert_eq!(spec.mzv, Some(MzvParams { n: 4, t: 0.8 }));
        assert_eq!(spec.to_string(), "mzv(n=4, t=0.8)");
        assert_eq!(
            ShaperSpec::parse("Mzv(5, 1.2)").map(|s| s.mzv),
            Ok(Some(MzvParams { n: 5, t: 1.2 }))
        );
    }

    #[test]
    fn parameterised_mzv_matches_klipper() {
        // shaper_defs.init_shaper(name, 50, 0.1), amplitudes normalised.
        let cases: [(&str, &[f64], &[f64]); 4] = [
            (
                "mzv(n=4, t=0.8)",
                &[
                    0.286663903904029,
                    0.2928777882073918,
                    0.24748741065395713,
                    0.17297089723462206,
                ],
                &[
                    0.0,
                    0.005360201681382464,
                    0.010720403362764927,
                    0.016080605044147395,
                ],
            ),
            (
                "mzv(5, 1.2)",
                &[
                    0.1424654045774073,
                    0.2882275399411868,
                    0.30520620064472403,
                    0.1973265375232228,
                    0.06677431731345906,
                ],
                &[
                    0.0,
                    0.006030226891555272,
                    0.012060453783110544,
                    0.018090680674665814,
                    0.024120907566221088,
                ],
            ),
            (
                "mzv(n=4,tau=1.0)",
                &[
                    0.3119194556230568,
                    0.2663667260305348,
                    0.22746651886302321,
                    0.19424729948338515,
                ],
                &[
                    0.0,
                    0.00502518907629606,
                    0.01005037815259212,
                    0.01507556722888818,
                ],
            ),
            (
                "mzv(n=10,t=2.0)",
                &[
                    0.017448043387046374,
                    0.06472631626295441,
                    0.13108097214688738,
                    0.18695390458790612,
                    0.20487072985491223,
                    0.1780473350693156,
                    0.12271601089421687,
                    0.06498565030016179,
                    0.024236496055910304,
                    0.004934541440688976,
                ],
                &[
                    0.0,
                    0.004466834734485386,
                    0.008933669468970772,
                    0.013400504203456159,
                    0.017867338937941544,
                    0.022334173672426936,
                    0.026801008406912318,
                    0.03126784314139771,
                    0.03573467787588309,
                    0.04020151261036848,
                ],
            ),
        ];
        for (name, want_a, want_t) in cases {
            let spec = ShaperSpec::parse(name).expect(name);
            let (a, t) = spec.pulses(50.0, 0.1).expect(name);
            let sum: f64 = a.iter().sum();
            assert_eq!(a.len(), want_a.len(), "{name}");
            for (got, want) in a.iter().zip(want_a) {
                assert!(close(got / sum, *want, 1e-9), "{name}: {got} vs {want}");
            }
            for (got, want) in t.iter().zip(want_t) {
                assert!(close(*got, *want, 1e-15), "{name}");
            }
        }
        // The generalised solver reproduces the classic MZV.
        let general = ShaperSpec::parse("mzv(n=3, t=0.75)").expect("valid");
        let (a, t) = general.pulses(37.0, 0.07).expect("valid");
        let (ca, ct) = pulses(ShaperType::Mzv, 37.0, 0.07);
        for (x, y) in a.iter().zip(&ca).chain(t.iter().zip(&ct)) {
            assert!(close(*x, *y, 1e-12));
        }
    }

    #[test]
    fn prepared_pulses_are_normalised_mirrored_and_centred() {
        for kind in ShaperType::ALL {
            let sp = ShaperPulses::from_spec(&kind.into(), 42.0, 0.1).expect("valid");
            let (a, t) = pulses(kind, 42.0, 0.1);
            assert_eq!(sp.len(), a.len());
            let sum: f64 = sp.amplitudes().iter().sum();
            assert!(close(sum, 1.0, 1e-15));
            let mean: f64 = sp
                .amplitudes()
                .iter()
                .zip(sp.times())
                .map(|(a, t)| a * t)
                .sum();
            assert!(close(mean, 0.0, 1e-17), "{kind}: mean {mean}");
            assert!(sp.times().windows(2).all(|w| w[0] < w[1]));
            // Mirrored: the last defined pulse comes first, spacing preserved.
            let last_a = a[a.len() - 1] / a.iter().sum::<f64>();
            assert!(close(sp.amplitudes()[0], last_a, 1e-15));
            let span = t[t.len() - 1] - t[0];
            assert!(close(sp.pre_active() + sp.post_active(), span, 1e-15));
            assert_eq!(sp.pre_active(), sp.times()[sp.len() - 1]);
            assert_eq!(sp.post_active(), -sp.times()[0]);
            assert!(sp.pre_active() > 0.0 && sp.post_active() > 0.0);
        }
        let none = ShaperPulses::from_spec(&ShaperSpec::default(), 0.0, 0.1).expect("off");
        assert!(none.is_empty());
        assert_eq!((none.pre_active(), none.post_active()), (0.0, 0.0));
        assert_eq!(ShaperPulses::new(&[], &[]), Ok(ShaperPulses::none()));
        assert_eq!(
            ShaperPulses::new(&[1.0, 1.0], &[0.0, 0.0]),
            Err(ShaperError::TimesNotIncreasing)
        );
        assert_eq!(
            ShaperPulses::new(&[1.0; 11], &[0.0; 11]),
            Err(ShaperError::TooManyPulses(11))
        );
        assert!(matches!(
            ShaperPulses::new(&[1.0], &[0.0, 1.0]),
            Err(ShaperError::LengthMismatch { .. })
        ));
        assert_eq!(
            ShaperPulses::new(&[1.0, f64::NAN], &[0.0, 1.0]),
            Err(ShaperError::BadValues)
        );
        assert_eq!(
            ShaperPulses::new(&[1.0, -1.0], &[0.0, 1.0]),
            Err(ShaperError::BadValues)
        );
        // Damping at or above 1 has no damped period.
        assert!(ShaperPulses::from_spec(&ShaperSpec::default(), 40.0, 1.0).is_err());
    }

    fn diagonal() -> Coord {
        Coord::new(0.6, 0.8, 0.0)
    }

    /// Appends constant-acceleration pieces `(duration, start velocity, accel)` back to back.
    fn queue_from_pieces(
        start_time: f64,
        start: Coord,
        dir: Coord,
        pieces: &[(f64, f64, f64)],
    ) -> TrapQ {
        let mut q = TrapQ::new();
        let (mut time, mut pos) = (start_time, start);
        for &(dt, v0, accel) in pieces {
            q.append(time, dt, 0.0, 0.0, pos, dir, v0, 0.0, accel);
            let m = q.get(q.tail_index() - 1);
            pos = m.coord(dt);
            time = m.end_time();
        }
        q.check_sentinels();
        q
    }

    fn shaped_at(sp: &ShaperPulses, q: &TrapQ, axis: usize, time: f64) -> f64 {
        let index = q.find_from(0, time);
        sp.shaped_axis(q, index, axis, time - q.get(index).print_time)
    }

    fn nominal_at(q: &TrapQ, axis: usize, time: f64) -> f64 {
        let index = q.find_from(0, time);
        q.get(index)
            .axis_position(axis, time - q.get(index).print_time)
    }

    #[test]
    fn constant_velocity_passes_unchanged() {
        // A cruise split into uneven segments; every pulse lands inside the cruise.
        let pieces = [
            (0.013, 80.0, 0.0),
            (0.021, 80.0, 0.0),
            (0.0042, 80.0, 0.0),
            (0.3, 80.0, 0.0),
        ];
        let q = queue_from_pieces(2.0, Coord::new(5.0, 7.0, 1.0), diagonal(), &pieces);
        for kind in ShaperType::ALL {
            let sp = ShaperPulses::from_spec(&kind.into(), 33.0, 0.15).expect("valid");
            for k in 0..200 {
                let time = 2.05 + k as f64 * 0.001;
                for axis in 0..2 {
                    let got = shaped_at(&sp, &q, axis, time);
                    let want = nominal_at(&q, axis, time);
                    assert!(
                        close(got, want, 1e-9),
                        "{kind} axis {axis} t {time}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn velocity_step_is_smoothed_symmetrically_with_no_net_delay() {
        // At rest until t0, then 50 mm/s along X: a corner in the position.
        let t0 = 2.0;
        let v = 50.0;
        let q = queue_from_pieces(
            t0,
            Coord::default(),
            Coord::new(1.0, 0.0, 0.0),
            &[(1.0, v, 0.0)],
        );
        for kind in ShaperType::ALL {
            for zeta in [0.0, 0.1] {
                let sp = ShaperPulses::from_spec(&kind.into(), 40.0, zeta).expect("valid");
                let dev = |tau: f64| shaped_at(&sp, &q, 0, t0 + tau) - nominal_at(&q, 0, t0 + tau);
                // Outside the window: exactly on the nominal path (before and after).
                for tau in [-0.2, -sp.pre_active() - 1e-6, sp.post_active() + 1e-6, 0.3] {
                    assert!(close(dev(tau), 0.0, 1e-9), "{kind} ζ={zeta} τ={tau}");
                }
                // Inside: the corner is rounded, the shaped path runs ahead of the corner.
                assert!(dev(0.0) > 1e-3, "{kind}");
                // Symmetric trains (ZVD/MZV undamped) round the corner symmetrically in time.
                if zeta == 0.0 && matches!(kind, ShaperType::Zvd | ShaperType::Mzv) {
                    for k in 1..50 {
                        let tau = k as f64 * 0.0005;
                        assert!(close(dev(tau), dev(-tau), 1e-9), "{kind} τ={tau}");
                    }
                }
            }
        }
    }

    #[test]
    fn acceleration_step_gains_the_trains_second_moment() {
        // From rest at 3000 mm/s² along Y: x(t) = a/2·t² → Σ a_i·x(t + t_i) = x(t) + a/2·Σ a_i t_i².
        let t0 = 2.0;
        let accel = 3000.0;
        let q = queue_from_pieces(
            t0,
            Coord::default(),
            Coord::new(0.0, 1.0, 0.0),
            &[(0.5, 0.0, accel)],
        );
        for kind in ShaperType::ALL {
            let sp = ShaperPulses::from_spec(&kind.into(), 55.0, 0.1).expect("valid");
            let second: f64 = sp
                .amplitudes()
                .iter()
                .zip(sp.times())
                .map(|(a, t)| a * t * t)
                .sum();
            let offset = 0.5 * accel * second;
            let before = t0 - sp.pre_active() - 1e-4;
            assert!(close(shaped_at(&sp, &q, 1, before), 0.0, 1e-12), "{kind}");
            for k in 0..20 {
                let time = t0 + sp.post_active() + 1e-4 + k as f64 * 0.01;
                let got = shaped_at(&sp, &q, 1, time) - nominal_at(&q, 1, time);
                assert!(close(got, offset, 1e-9), "{kind}: {got} vs {offset}");
            }
        }
    }

    #[test]
    fn matches_klipper_step_generator() {
        // kin_shaper.c's calc_position on the same queue (Klipper's C built as a harness).
        let reference: [(&str, f64, f64, f64); 56] = [
            ("3hump_ei", 1.49, 10.013971981638589, 20.01862930885145),
            ("3hump_ei", 1.5, 10.050694792879195, 20.06759305717226),
            ("3hump_ei", 1.505, 10.080500643041105, 20.107334190721474),
            ("3hump_ei", 1.52, 10.217120873398994, 20.289494497865324),
            ("3hump_ei", 1.533, 10.38181782913926, 20.509090438852347),
            ("3hump_ei", 1.55, 10.712025402082666, 20.53430368355623),
            ("3hump_ei", 1.566, 10.930208778760129, 20.449861324376222),
            ("3hump_ei", 1.57, 10.937894371294425, 20.48818290017553),
            ("3hump_ei", 1.59, 11.101272694756528, 20.37801487723428),
            ("3hump_ei", 1.6, 11.076522420007576, 20.575806721080653),
            ("3hump_ei", 1.61, 11.122461529130778, 20.51860680839519),
            ("3hump_ei", 1.625, 11.012607622359942, 20.799568390220145),
            ("3hump_ei", 1.64, 11.0, 20.728616696225266),
            ("3hump_ei", 1.66, 11.0, 20.604149480111534),
            ("mzv", 1.49, 10.0, 20.0),
            ("mzv", 1.5, 10.011746706542827, 20.015662275390437),
            ("mzv", 1.505, 10.033843258783088, 20.045124345044115),
            ("mzv", 1.52, 10.185148926929777, 20.24686523590637),
            ("mzv", 1.533, 10.375, 20.5),
            ("mzv", 1.55, 10.625372729326093, 20.833830305768124),
            ("mzv", 1.566, 10.933631244545106, 20.664739147498565),
            ("mzv", 1.57, 11.117330695866213, 20.270577367719827),
            ("mzv", 1.59, 11.152869860276486, 20.10284760479263),
            ("mzv", 1.6, 11.135675845837106, 20.40145568821116),
            ("mzv", 1.61, 11.07127473309557, 20.768616941608105),
            ("mzv", 1.625, 11.0, 20.94532051900255),
            ("mzv", 1.64, 11.0, 20.68142571524045),
            ("mzv", 1.66, 11.0, 20.575),
            ("zv", 1.49, 10.0, 20.0),
            ("zv", 1.5, 10.017688245942157, 20.023584327922876),
            ("zv", 1.505, 10.040482742864402, 20.053976990485868),
            ("zv", 1.52, 10.188223374387633, 20.25096449918351),
            ("zv", 1.533, 10.374999999999996, 20.499999999999993),
            ("zv", 1.55, 10.622973390613591, 20.830631187484784),
            ("zv", 1.566, 10.99900053390291, 20.47675823913454),
            ("zv", 1.57, 10.984948615079347, 20.521193234163917),
            ("zv", 1.59, 11.16746662339744, 20.091900032451914),
            ("zv", 1.6, 11.06793938810571, 20.588499380555497),
            ("zv", 1.61, 11.154834996059641, 20.52332767459005),
            ("zv", 1.625, 11.0, 20.927558224230033),
            ("zv", 1.64, 11.0, 20.70126295015512),
            ("zv", 1.66, 11.0, 20.574999999999996),
            (
                "mzv(n=5, t=1.2)",
                1.49,
                10.001002980322315,
                20.00133730709642,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.5,
                10.017613778306709,
                20.02348503774228,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.505,
                10.040936302472577,
                20.054581736630105,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.52,
                10.188803061744608,
                20.251737415659477,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.533,
                10.375061019286267,
                20.50008135904835,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.55,
                10.621734271224534,
                20.82897902829938,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.566,
                10.941137525446686,
                20.61044748700545,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.57,
                11.08011754038608,
                20.32357514645744,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.59,
                11.171532449277114,
                20.088850663042155,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.6,
                11.114879764232949,
                20.454397839180828,
            ),
            (
                "mzv(n=5, t=1.2)",
                1.61,
                11.081620425798107,
                20.719586929298618,
            ),
            ("mzv(n=5, t=1.2)", 1.625, 11.0, 20.927896559233414),
            ("mzv(n=5, t=1.2)", 1.64, 11.0, 20.693416963755233),
            ("mzv(n=5, t=1.2)", 1.66, 11.0, 20.574999999999996),
        ];
        let mut q = TrapQ::new();
        q.append(
            1.5,
            0.02,
            0.03,
            0.015,
            Coord::new(10.0, 20.0, 5.0),
            diagonal(),
            5.0,
            25.0,
            1000.0,
        );
        let start_x = 10.6 + 0.6 * 0.2 + 0.6 * 0.75 + 0.6 * 0.2;
        let dir = Coord::new(-0.8, 0.6, 0.0);
        q.append(
            1.565,
            0.01,
            0.004,
            0.025,
            Coord::new(start_x, 20.0, 5.0),
            dir,
            3.0,
            13.0,
            2000.0,
        );
        let dir = Coord::new(0.0, -1.0, 0.0);
        q.append(
            1.62,
            0.015,
            0.0,
            0.01,
            Coord::new(11.0, 21.0, 5.0),
            dir,
            0.0,
            30.0,
            2000.0,
        );
        q.check_sentinels();
        let freqs = [
            ("3hump_ei", 40.0, 0.12),
            ("mzv", 50.0, 0.1),
            ("zv", 35.0, 0.05),
            ("mzv(n=5, t=1.2)", 45.0, 0.08),
        ];
        for (name, time, want_x, want_y) in reference {
            let &(_, f, zeta) = freqs.iter().find(|(n, _, _)| *n == name).expect("known");
            let spec = ShaperSpec::parse(name).expect("valid");
            let sp = ShaperPulses::from_spec(&spec, f, zeta).expect("valid");
            let shapers = AxisShapers {
                x: sp,
                y: sp,
                z: ShaperPulses::none(),
            };
            let index = q.find_from(0, time);
            let p =
                shapers.shaped_coord(&q, index, time - q.get(index).print_time, ActiveAxes::XYZ);
            assert!(
                close(p.x, want_x, 1e-9),
                "{name} {time}: x {} vs {want_x}",
                p.x
            );
            assert!(
                close(p.y, want_y, 1e-9),
                "{name} {time}: y {} vs {want_y}",
                p.y
            );
            assert!(close(p.z, 5.0, 1e-12));
        }
    }

    #[test]
    fn shaped_coord_shapes_only_read_axes_with_pulses() {
        let q = queue_from_pieces(
            1.0,
            Coord::new(1.0, 2.0, 3.0),
            Coord::new(0.6, 0.0, 0.8),
            &[(0.2, 0.0, 2000.0)],
        );
        let zv = ShaperPulses::from_spec(&ShaperType::Zv.into(), 30.0, 0.1).expect("valid");
        let ei = ShaperPulses::from_spec(&ShaperType::Ei.into(), 30.0, 0.1).expect("valid");
        let shapers = AxisShapers {
            x: zv,
            y: ShaperPulses::none(),
            z: ei,
        };
        let time = 1.05;
        let index = q.find_from(0, time);
        let mt = time - q.get(index).print_time;
        let plain = q.get(index).coord(mt);
        let all = shapers.shaped_coord(&q, index, mt, ActiveAxes::XYZ);
        assert!(close(all.x, zv.shaped_axis(&q, index, 0, mt), 1e-15));
        assert!(all.x != plain.x);
        assert_eq!(all.y, plain.y);
        assert!(close(all.z, ei.shaped_axis(&q, index, 2, mt), 1e-15));
        let x_only = shapers.shaped_coord(&q, index, mt, ActiveAxes::X);
        assert_eq!((x_only.x, x_only.y, x_only.z), (all.x, plain.y, plain.z));
        assert_eq!(shapers.shaped_coord(&q, index, mt, ActiveAxes::Y), plain);
        assert_eq!(
            AxisShapers::none().shaped_coord(&q, index, mt, ActiveAxes::XYZ),
            plain
        );
        assert!(shapers.shapes(ActiveAxes::X) && !shapers.shapes(ActiveAxes::Y));
        // Generation window: the widest over the read, shaped axes.
        assert_eq!(shapers.pre_active(ActiveAxes::X), zv.pre_active());
        assert_eq!(shapers.post_active(ActiveAxes::Y), 0.0);
        assert_eq!(
            shapers.pre_active(ActiveAxes::XYZ),
            zv.pre_active().max(ei.pre_active())
        );
        assert_eq!(
            shapers.post_active(ActiveAxes::XYZ),
            zv.post_active().max(ei.post_active())
        );
    }

    #[test]
    fn walking_past_the_queue_ends_is_defined() {
        let q = queue_from_pieces(
            0.5,
            Coord::new(4.0, 0.0, 0.0),
            Coord::new(1.0, 0.0, 0.0),
            &[(0.1, 10.0, 0.0)],
        );
        let sp = ShaperPulses::from_spec(&ShaperType::ThreeHumpEi.into(), 1.0, 0.1).expect("valid");
        // Pulses reach seconds back and forth; before the queue the axis stood at its start.
        let before = shaped_at(&sp, &q, 0, 0.55);
        assert!(before.is_finite() && (4.0..=5.0).contains(&before));
        let after = shaped_at(&sp, &q, 0, 100.0);
        assert!(close(after, 5.0, 1e-9));
    }

    fn piece_strategy() -> impl Strategy<Value = Vec<(f64, f64)>> {
        // (duration, accel) of each phase of a long move.
        prop::collection::vec((0.001f64..0.08, -3000.0f64..3000.0), 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn split_moves_shape_like_one_move(
            phases in piece_strategy(),
            v0 in 0.0f64..60.0,
            cuts in prop::collection::vec(0.0f64..1.0, 0..12),
            kind in prop::sample::select(ShaperType::ALL.to_vec()),
            freq in 20.0f64..90.0,
            zeta in 0.0f64..0.2,
            probes in prop::collection::vec(0.0f64..1.0, 1..8),
        ) {
            // Whole phases as one segment each.
            let mut whole = Vec::new();
            let mut v = v0;
            for &(dt, a) in &phases {
                whole.push((dt, v, a));
                v += a * dt;
            }
            // The same motion cut at random fractions of each phase.
            let mut split = Vec::new();
            for (i, &(dt, v_start, a)) in whole.iter().enumerate() {
                let mut fracs: Vec<f64> = cuts.iter().copied().filter(|c| (c * 7.0 + i as f64) % 2.0 < 1.0).collect();
                fracs.retain(|f| *f > 0.01 && *f < 0.99);
                fracs.sort_by(f64::total_cmp);
                fracs.dedup();
                let mut prev = 0.0;
                for f in fracs.into_iter().chain([1.0]) {
                    let t0 = prev * dt;
                    let piece = (f - prev) * dt;
                    split.push((piece, v_start + a * t0, a));
                    prev = f;
                }
            }
            let start = Coord::new(3.0, -2.0, 0.5);
            let qa = queue_from_pieces(2.0, start, diagonal(), &whole);
            let qb = queue_from_pieces(2.0, start, diagonal(), &split);
            let sp = ShaperPulses::from_spec(&kind.into(), freq, zeta).expect("valid");
            let end = qa.get(qa.tail_index()).print_time;
            for p in probes {
                let time = 1.95 + p * (end + 0.1 - 1.95);
                for axis in 0..2 {
                    let a = shaped_at(&sp, &qa, axis, time);
                    let b = shaped_at(&sp, &qb, axis, time);
                    prop_assert!(close(a, b, 1e-9 * a.abs().max(1.0)), "{} vs {} at {}", a, b, time);
                }
            }
        }

        #[test]
        fn never_panics(
            index in any::<usize>(),
            axis in any::<usize>(),
            move_time in prop::num::f64::ANY,
            freq in prop::num::f64::ANY,
            zeta in prop::num::f64::ANY,
            kind in prop::sample::select(ShaperType::ALL.to_vec()),
            name in ".{0,24}",
        ) {
            let _ = ShaperSpec::parse(&name);
            let _ = ShaperSpec::parse(&format!("mzv({name})"));
            let q = queue_from_pieces(1.0, Coord::default(), diagonal(), &[(0.05, 10.0, 100.0), (0.05, 15.0, -100.0)]);
            let empty = TrapQ::new();
            let sp = ShaperPulses::from_spec(&kind.into(), freq, zeta).unwrap_or_else(|_| {
                ShaperPulses::from_spec(&kind.into(), 40.0, 0.1).expect("valid")
            });
            for queue in [&q, &empty] {
                let _ = sp.shaped_axis(queue, index, axis, move_time);
                let _ = sp.shaped_axis(queue, index % 8, axis % 4, move_time);
                let shapers = AxisShapers { x: sp, y: sp, z: sp };
                let _ = shapers.shaped_coord(queue, index % 8, move_time, ActiveAxes::XYZ);
            }
        }
    }
}
