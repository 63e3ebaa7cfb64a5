//! The live feed from a simulated printer: `gantry twin --live-sim FILE` runs Gantry's planner as
//! a live Klipper host against the simulated MCU in this process (core's `VirtualHost`, a
//! virtual clock in lockstep with the sim), paced to the chosen speed against the wall clock, and
//! shows where the sim's steppers actually are — their step counts turned back into a toolhead
//! position by forward kinematics — with the planned toolpath as a ghost.
//!
//! The print runs on its own thread. [`PacedHost`] wraps the virtual host: whenever the printer
//! waits, virtual time advances in small steps, never ahead of real time × speed, and after each
//! step the sim's step counts are published. The app reads the newest reading each frame.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use gantry_core::live::LiveHost;
use gantry_core::live::virtual_host::{VirtualHost, VirtualOptions};
use gantry_core::motion::config::Config;
use gantry_core::motion::printer::{LiveEvent, Printer};
use gantry_core::motion::toolhead::McuMessage;
use gantry_sim::runtime::SimMcu;

use crate::SceneInfo;
use crate::loader::LoadState;
use crate::playback::{Nozzle, segment_near};
use crate::timeline::{Phase, Sample};
use crate::toolpath::NozzleCut;

/// Virtual time per pacing step, s.
const STEP_S: f64 = 0.004;

/// How a stepper's step count becomes millimetres along its rail.
#[derive(Clone, Debug)]
struct StepperMap {
    oid: usize,
    step_dist_mm: f64,
    offset_mm: f64,
    invert: bool,
}

/// What the print thread shares with the app.
#[derive(Debug, Default)]
struct Shared {
    /// Virtual time of the reading, s.
    time: f64,
    /// Step counts by oid, as the sim reports them (dir=1 up).
    steps: Vec<(usize, i64)>,
    /// The reading before: (virtual time, step counts), for the speed.
    before: Option<(f64, Vec<(usize, i64)>)>,
    /// The toolhead's steppers in kinematics order.
    map: Vec<StepperMap>,
    /// The G-code line the host runs.
    line: u32,
    /// The printer's last message.
    message: String,
    /// The print ended (or failed: `message` says why).
    done: bool,
    /// Readings so far.
    readings: u64,
    /// Virtual time at which the print holds still (a screenshot of that moment).
    hold_at: Option<f64>,
}

/// The live feed's state in the app.
#[derive(Resource)]
pub struct LiveState {
    shared: Arc<Mutex<Shared>>,
    /// The newest toolhead position from the sim's steppers, mm.
    pub position_mm: Option<[f64; 3]>,
    /// Each stepper's position along its rail, mm.
    pub stepper_mm: Vec<f64>,
    /// Virtual time, s.
    pub time: f64,
    /// The host's current line.
    pub line: u32,
    /// The printer's last message or the failure.
    pub message: String,
    /// Whether the print ended.
    pub done: bool,
    /// Virtual seconds per real second.
    pub speed: f64,
    /// What the feed comes from, for the HUD ("the simulated MCU at 10×").
    pub source: String,
    /// A screenshot waits for this much virtual time (`--at 60s`).
    pub show_after_s: f64,
}

impl LiveState {
    /// The state of a feed from elsewhere (see [`crate::feed`]): no simulated steppers here.
    pub fn remote(source: String) -> Self {
        Self {
            shared: Arc::default(),
            position_mm: None,
            stepper_mm: Vec::new(),
            time: 0.0,
            line: 0,
            message: "connecting…".into(),
            done: false,
            speed: 1.0,
            source,
            show_after_s: 0.0,
        }
    }

    /// Whether a reading arrived, as late as a screenshot asked for.
    pub fn ready(&self) -> bool {
        self.position_mm.is_some() && (self.time >= self.show_after_s || self.done)
    }
}

/// A [`LiveHost`] that paces a virtual host to real time × `speed` and publishes the sim's step
/// counts as virtual time goes.
pub struct PacedHost {
    inner: VirtualHost,
    speed: f64,
    start_real: Instant,
    start_virtual: f64,
    shared: Arc<Mutex<Shared>>,
    last_publish: Instant,
}

impl PacedHost {
    fn publish(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_publish) < Duration::from_millis(8) {
            return;
        }
        self.last_publish = now;
        let steps: Vec<(usize, i64)> = self.inner.with_sim(|s| {
            s.report()
                .steppers
                .iter()
                .map(|r| (r.oid, r.position))
                .collect()
        });
        let time = self.inner.now();
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut shared.steps, steps);
        shared.before = (!old.is_empty()).then_some((shared.time, old));
        shared.time = time;
        shared.readings += 1;
    }

    fn pace(&self) {
        let ahead = (self.inner.now() - self.start_virtual) / self.speed
            - self.start_real.elapsed().as_secs_f64();
        if ahead > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(ahead.min(0.5)));
        }
    }
}

impl LiveHost for PacedHost {
    fn monotonic(&mut self) -> f64 {
        self.inner.monotonic()
    }

    fn estimated_print_time(&mut self, eventtime: f64) -> f64 {
        self.inner.estimated_print_time(eventtime)
    }

    fn clock32_to_clock64(&mut self, mcu: usize, clock32: u32) -> u64 {
        self.inner.clock32_to_clock64(mcu, clock32)
    }

    fn transmit(&mut self, mcu: usize, messages: Vec<McuMessage>) {
        self.inner.transmit(mcu, messages);
    }

    fn wait(&mut self, until: f64) -> Option<LiveEvent> {
        loop {
            let now = self.inner.now();
            if now >= until {
                return None;
            }
            let hold = self
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .hold_at;
            if let Some(hold) = hold.filter(|h| now >= *h) {
                // Held for a picture of that moment: publish it and stand still.
                let _ = hold;
                self.last_publish = Instant::now() - Duration::from_secs(1);
                self.publish();
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let mut step_end = (now + STEP_S).min(until);
            if let Some(h) = hold.filter(|h| *h > now) {
                step_end = step_end.min(h);
            }
            let event = self.inner.wait(step_end);
            self.publish();
            self.pace();
            if event.is_some() {
                return event;
            }
        }
    }
}

/// Starts the simulated printer running `file` at `speed`; the app shows its steppers.
///
/// # Errors
/// A file that cannot be read.
pub fn start(
    app: &mut App,
    config: &Config,
    file: &Path,
    speed: f64,
    show_after_s: f64,
    hold: bool,
) -> anyhow::Result<()> {
    let gcode = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("cannot read G-code file {}: {e}", file.display()))?;
    let shared = Arc::new(Mutex::new(Shared {
        hold_at: hold.then_some(show_after_s),
        ..Shared::default()
    }));
    let thread_shared = shared.clone();
    let config = config.clone();
    let speed = speed.max(0.01);
    std::thread::Builder::new()
        .name("twin-live-sim".into())
        .spawn(move || {
            let result = print(&config, &gcode, speed, &thread_shared);
            let mut s = thread_shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.done = true;
            if let Err(e) = result {
                bevy::log::error!("live sim: {e}");
                s.message = format!("stopped: {e}");
            } else {
                s.message = "print finished".into();
            }
        })?;
    app.insert_resource(LiveState {
        shared,
        position_mm: None,
        stepper_mm: Vec::new(),
        time: 0.0,
        line: 0,
        message: "connecting to the simulated MCU…".into(),
        done: false,
        speed,
        source: format!("the simulated MCU at {speed}×"),
        show_after_s,
    })
    .add_systems(Update, read_live.after(crate::playback::PlaybackSystems));
    Ok(())
}

fn print(
    config: &Config,
    gcode: &[u8],
    speed: f64,
    shared: &Arc<Mutex<Shared>>,
) -> anyhow::Result<()> {
    let host = VirtualHost::new(SimMcu::new(), VirtualOptions::default());
    let mut built = None;
    let move_count = host
        .connect(|dict| {
            let p = Printer::new(config, &[("mcu", dict)]).map_err(|e| e.to_string())?;
            let cmds = p.mcus[0].config_phase();
            built = Some(p);
            Ok(cmds)
        })
        .map_err(|e| anyhow::anyhow!("the simulated MCU did not take the printer.cfg: {e}"))?;
    let mut printer = built.ok_or_else(|| anyhow::anyhow!("no printer was built"))?;
    let sim = host.clone();
    let paced = PacedHost {
        start_virtual: host.now(),
        inner: host,
        speed,
        start_real: Instant::now(),
        shared: shared.clone(),
        last_publish: Instant::now() - Duration::from_secs(1),
    };
    printer.start_live(Box::new(paced), &[usize::from(move_count)]);
    let map_of = |p: &Printer| -> Vec<StepperMap> {
        p.rails
            .iter()
            .filter_map(|r| r.steppers.first())
            .filter_map(|&i| p.toolhead.steppers.get(i))
            .map(|s| StepperMap {
                oid: usize::from(s.oid),
                step_dist_mm: s.solver.step_dist(),
                offset_mm: s.mcu_position_offset,
                invert: s.sc.invert_dir(),
            })
            .collect()
    };
    // Home first: the file may leave homing to a start macro the printer does not have.
    printer.live_run_line("G28", 0)?;
    let mut responses_seen = printer.responses.len();
    let text = String::from_utf8_lossy(gcode);
    for (i, line) in text.lines().enumerate() {
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        printer.live_run_line(line, line_no)?;
        let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.line = line_no;
        s.map = map_of(&printer);
        if printer.responses.len() > responses_seen {
            if let Some(r) = printer.responses.last() {
                s.message = r.text.clone();
            }
            responses_seen = printer.responses.len();
        }
    }
    printer.live_wait_moves()?;
    // The last reading, whatever the publishing pace.
    let steps = sim.with_sim(|s| {
        s.report()
            .steppers
            .iter()
            .map(|r| (r.oid, r.position))
            .collect()
    });
    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
    s.steps = steps;
    s.time = sim.now();
    s.readings += 1;
    Ok(())
}

fn read_live(
    mut live: ResMut<LiveState>,
    info: Res<SceneInfo>,
    state: Option<Res<LoadState>>,
    mut nozzle: ResMut<Nozzle>,
    mut cut: ResMut<NozzleCut>,
) {
    let (time, steps, before, map, line, message, done) = {
        let s = live.shared.lock().unwrap_or_else(PoisonError::into_inner);
        (
            s.time,
            s.steps.clone(),
            s.before.clone(),
            s.map.clone(),
            s.line,
            s.message.clone(),
            s.done,
        )
    };
    live.line = line;
    live.message = message;
    live.done = done;
    if map.is_empty() || steps.is_empty() {
        return;
    }
    let rails_of = |steps: &[(usize, i64)]| -> Vec<f64> {
        map.iter()
            .map(|m| {
                let raw = steps
                    .iter()
                    .find(|(oid, _)| *oid == m.oid)
                    .map_or(0, |s| s.1);
                let host_steps = if m.invert { -raw } else { raw };
                #[allow(clippy::cast_precision_loss)]
                let mm = host_steps as f64 * m.step_dist_mm - m.offset_mm;
                mm
            })
            .collect()
    };
    let rails = rails_of(&steps);
    let Some(pos) = info.machine.toolhead_from_steppers(&rails) else {
        return;
    };
    // The speed between the last two readings (a few ms of real time apart).
    let speed = before
        .filter(|(t0, _)| time > *t0)
        .and_then(|(t0, s0)| {
            let p0 = info.machine.toolhead_from_steppers(&rails_of(&s0))?;
            let d = (0..3).map(|i| (pos[i] - p0[i]).powi(2)).sum::<f64>().sqrt();
            Some(d / (time - t0))
        })
        .unwrap_or(0.0);
    live.position_mm = Some(pos);
    live.stepper_mm = rails;
    live.time = time;
    nozzle.live = true;
    nozzle.sample = Sample {
        time,
        pos_mm: pos,
        speed_mm_s: speed,
        accel_mm_s2: 0.0,
        phase: if speed > 0.01 {
            Phase::Moving
        } else {
            Phase::Idle
        },
        move_index: None,
        line,
    };
    // The toolpath is coloured up to where the nozzle is, the rest is the ghost. The HUD shows
    // the line of the move the nozzle is on; the host's line (`live.line`) runs ahead of it by
    // the planner's lookahead and is shown beside it, as for a printer followed over the API.
    if let Some(state) = state
        && let Some(meta) = &state.meta
    {
        let near = segment_near(&state, meta, pos, line, 4096);
        #[allow(clippy::cast_possible_truncation)]
        let p = pos.map(|v| v as f32);
        nozzle.sample.line = near
            .filter(|(i, _)| {
                crate::playback::distance_to_segment(&state, *i, p)
                    .is_some_and(|d| d <= crate::feed::ON_PATH_MM)
            })
            .and_then(|(i, _)| meta.lines.get(i as usize).copied())
            .unwrap_or(0);
        cut.at = near.or(cut.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;

    /// The sim's step counts, turned back into a position, end where the G-code ends.
    #[test]
    fn the_sims_steppers_end_where_the_file_ends() {
        let config = crate::load_config(None).expect("config");
        let machine = Machine::from_config(&config).expect("machine");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let gcode = b"G90\nG1 Z5 F600\nG1 X50 Y40 F6000\nG1 X80.5 Y20.25\nM400\n";
        // Fast: a few seconds of printer time take a few milliseconds.
        print(&config, gcode, 1000.0, &shared).expect("the print runs");
        let s = shared.lock().expect("lock");
        assert!(s.readings > 0, "readings were published");
        assert_eq!(s.line, 5);
        let rails: Vec<f64> = s
            .map
            .iter()
            .map(|m| {
                let raw = s.steps.iter().find(|(o, _)| *o == m.oid).map_or(0, |x| x.1);
                let steps = if m.invert { -raw } else { raw };
                steps as f64 * m.step_dist_mm - m.offset_mm
            })
            .collect();
        let pos = machine
            .toolhead_from_steppers(&rails)
            .expect("forward kinematics");
        // Within one step (X/Y 1/80 mm, Z 1/400 mm).
        for (axis, want) in [80.5, 20.25, 5.0].iter().enumerate() {
            assert!(
                (pos[axis] - want).abs() <= 1.0 / 80.0 + 1e-9,
                "axis {axis}: the sim's steppers say {pos:?}"
            );
        }
    }
}
