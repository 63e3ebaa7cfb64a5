//! `[input_shaper]` and `SET_INPUT_SHAPER`: per-axis shaper parameters (X, Y and Z, as Klipper
//! has them), validated with Klipper's messages, installed in front of every toolhead stepper's
//! kinematics. A change flushes step generation first (the toolhead stops), as Klipper does.

use std::borrow::Cow;

use super::{Cfg, CommandError, Printer, PrinterError, cfg_err, minval};
use crate::config::FloatBounds;
use crate::shaper::{AxisShapers, ShaperPulses, ShaperType};
use crate::toolhead::MoveError;
use crate::toolhead::TrapqId;

/// Klipper's default damping ratio.
const DEFAULT_DAMPING_RATIO: f64 = 0.1;

/// One axis' shaper settings.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AxisShaperParams {
    axis: char,
    kind: ShaperType,
    freq_hz: f64,
    damping_ratio: f64,
}

impl AxisShaperParams {
    /// The prepared train, as Klipper computes it (`shaper_defs.py`; MZV through the
    /// generalised train, [`crate::shaper::ShaperSpec::pulses`]); none at 0 Hz.
    fn pulses(&self) -> Result<ShaperPulses, String> {
        ShaperPulses::from_spec(&self.kind.into(), self.freq_hz, self.damping_ratio)
            .map_err(|e| e.to_string())
    }

    fn report(&self) -> String {
        let a = self.axis;
        format!(
            "shaper_type_{a}:{} shaper_freq_{a}:{:.3} damping_ratio_{a}:{:.6}",
            self.kind.name(),
            self.freq_hz,
            self.damping_ratio
        )
    }
}

/// The `[input_shaper]` state: X, Y and Z.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct InputShaperState {
    axes: [AxisShaperParams; 3],
}

impl InputShaperState {
    fn shapers(&self) -> Result<AxisShapers, String> {
        Ok(AxisShapers {
            x: self.axes[0].pulses()?,
            y: self.axes[1].pulses()?,
            z: self.axes[2].pulses()?,
        })
    }
}

fn shaper_kind(name: &str) -> Option<ShaperType> {
    ShaperType::from_name(&name.to_ascii_lowercase())
}

impl Printer {
    pub(super) fn build_input_shaper(&mut self, cfg: &Cfg<'_>) -> Result<(), PrinterError> {
        let s = "input_shaper";
        if !cfg.has(s) {
            return Ok(());
        }
        let default_type = cfg.get_opt(s, "shaper_type").unwrap_or("mzv").trim();
        let mut axes = Vec::with_capacity(3);
        for axis in ['x', 'y', 'z'] {
            let kind_text = cfg
                .get_opt(s, &format!("shaper_type_{axis}"))
                .map_or(default_type, str::trim);
            let kind = ShaperType::from_name(kind_text)
                .filter(|k| k.name() == kind_text)
                .ok_or_else(|| cfg_err(format!("Unsupported shaper type: {kind_text}")))?;
            let damping_ratio = cfg.getfloat(
                s,
                &format!("damping_ratio_{axis}"),
                Some(DEFAULT_DAMPING_RATIO),
                FloatBounds::NONE.min(0.0).max(kind.max_damping_ratio()),
            )?;
            let freq_hz =
                cfg.getfloat(s, &format!("shaper_freq_{axis}"), Some(0.0), minval(0.0))?;
            let params = AxisShaperParams {
                axis,
                kind,
                freq_hz,
                damping_ratio,
            };
            params.pulses().map_err(cfg_err)?;
            axes.push(params);
        }
        let [x, y, z]: [AxisShaperParams; 3] = axes
            .try_into()
            .map_err(|_| cfg_err("input_shaper: three axes expected"))?;
        let state = InputShaperState { axes: [x, y, z] };
        self.install_shapers(&state).map_err(cfg_err)?;
        self.input_shaper = Some(state);
        self.note_shaper_position_skew();
        Ok(())
    }

    fn install_shapers(&mut self, state: &InputShaperState) -> Result<(), String> {
        let shapers = state.shapers()?;
        for st in &mut self.toolhead.steppers {
            if st.trapq == Some(TrapqId::Toolhead) {
                st.solver.set_shaper(Some(shapers));
            }
        }
        self.toolhead.check_step_generation_scan_windows();
        Ok(())
    }

    /// `SET_INPUT_SHAPER [SHAPER_TYPE=] [SHAPER_TYPE_X=] [SHAPER_FREQ_X=] [DAMPING_RATIO_X=] …`
    pub(super) fn cmd_set_input_shaper(
        &mut self,
        cmd: &super::Command<'_>,
    ) -> Result<(), CommandError> {
        let Some(mut state) = self.input_shaper.clone() else {
            return Err(CommandError::User(
                "Unknown command:\"SET_INPUT_SHAPER\"".into(),
            ));
        };
        if cmd.has_params() {
            for p in &mut state.axes {
                let up = p.axis.to_ascii_uppercase();
                let kind_text = match cmd.param("SHAPER_TYPE") {
                    Some(t) => t.into_owned(),
                    None => cmd
                        .param(&format!("SHAPER_TYPE_{up}"))
                        .map_or_else(|| p.kind.name().to_owned(), Cow::into_owned),
                };
                let kind = shaper_kind(&kind_text).ok_or_else(|| {
                    CommandError::User(format!("Unsupported shaper type: {kind_text}"))
                })?;
                let damping_ratio = cmd
                    .get_float(&format!("DAMPING_RATIO_{up}"), Some(p.damping_ratio))?
                    .unwrap_or(p.damping_ratio);
                if damping_ratio < 0.0 {
                    return Err(CommandError::User(format!(
                        "Error on 'SET_INPUT_SHAPER': DAMPING_RATIO_{up} must have minimum of 0.0"
                    )));
                }
                if damping_ratio > kind.max_damping_ratio() {
                    return Err(CommandError::User(format!(
                        "Too high value of damping_ratio={damping_ratio:.3} for shaper \
                         {kind_text} on axis {up}"
                    )));
                }
                let freq_hz = cmd
                    .get_float(&format!("SHAPER_FREQ_{up}"), Some(p.freq_hz))?
                    .unwrap_or(p.freq_hz);
                if freq_hz < 0.0 {
                    return Err(CommandError::User(format!(
                        "Error on 'SET_INPUT_SHAPER': SHAPER_FREQ_{up} must have minimum of 0.0"
                    )));
                }
                *p = AxisShaperParams {
                    axis: p.axis,
                    kind,
                    freq_hz,
                    damping_ratio,
                };
                p.pulses().map_err(CommandError::User)?;
            }
            self.toolhead.flush_step_generation()?;
            self.install_shapers(&state).map_err(|e| {
                CommandError::Move(MoveError::Extruder(format!(
                    "Failed to configure shaper(s) with given parameters: {e}"
                )))
            })?;
            self.input_shaper = Some(state.clone());
        }
        for (i, p) in state.axes.iter().enumerate() {
            if i < 2 || p.freq_hz != 0.0 {
                let line = p.report();
                self.respond_info(&line);
            }
        }
        Ok(())
    }
}
