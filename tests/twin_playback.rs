//! The twin's playback model on a real sliced file (SuperSlicer + ArcWelder, 248 arcs): the
//! timeline is the planner's own (the same print time as `gantry estimate`), and at any moment
//! the nozzle is on the toolpath the twin draws, on the segment of the line it is running.

use gantry_core::motion::estimate::estimate_assuming_homed;
use gantry_twin::timeline::{Phase, plan};
use gantry_twin::toolpath_data::{Attr, LoadedToolpath};
use gantry_twin::{load_config, machine::Machine, reader_options};

const FILE: &[u8] = include_bytes!("fixtures/gcode/superslicer-2.3.56_klipper_arcwelder.gcode");

#[test]
fn the_timeline_is_the_planners_print_time() {
    let config = load_config(None).expect("config");
    let timeline = plan(&config, FILE).expect("plan");
    let estimate = estimate_assuming_homed(&config, FILE).expect("estimate");
    let span = timeline.end_time() - timeline.start_time();
    assert!(
        // The timeline keeps each move's start in f64 and its phase times in f32.
        (span - estimate.print_time_s).abs() < 1e-6,
        "timeline {span} s, estimate {} s",
        estimate.print_time_s
    );
    assert_eq!(timeline.moves().len(), estimate.moves);
}

#[test]
fn the_nozzle_is_on_the_drawn_toolpath_at_every_moment() {
    let config = load_config(None).expect("config");
    let machine = Machine::from_config(&config).expect("machine");
    let timeline = plan(&config, FILE).expect("plan");
    let path = LoadedToolpath::from_gcode(FILE, reader_options(&machine));
    let meta = &path.meta;
    let (start, end) = (timeline.start_time(), timeline.end_time());
    let mut checked = 0;
    let mut phases = [0usize; 3];
    let mut arc_offsets = Vec::new();
    for i in 0..4000 {
        let t = start + (end - start) * f64::from(i) / 4000.0;
        let s = timeline.sample(t);
        let (a, b) = meta.segments_of_line(s.line);
        if s.line == 0 || a == b || s.phase == Phase::Idle || s.phase == Phase::ExtrudeOnly {
            continue;
        }
        // Printing moves only: a travel after a macro (the sim printer's START_PRINT homes and
        // parks) starts where the macro left the head, which the file does not say.
        let printing = (a..b)
            .filter_map(|k| path.segment(k))
            .all(|(_, y)| !Attr::unpack(y.attr).travel);
        if !printing {
            continue;
        }
        match s.phase {
            Phase::Accelerate => phases[0] += 1,
            Phase::Cruise => phases[1] += 1,
            Phase::Decelerate => phases[2] += 1,
            _ => {}
        }
        let p = s.pos_mm;
        let nearest = (a..b)
            .filter_map(|k| path.segment(k))
            .map(|(x, y)| distance(p, x.pos, y.pos))
            .fold(f64::MAX, f64::min);
        // Straight lines agree to float precision. On arcs the planner follows Klipper's 1 mm
        // chords, which stray from the arc by their sagitta (at most 0.5 mm, 0.06 mm on a 2 mm
        // radius), the twin's drawing by 0.01 mm at most.
        let arc = b - a > 1;
        let tolerance = if arc { 0.51 } else { 1e-3 };
        if arc {
            arc_offsets.push(nearest);
        }
        assert!(
            nearest < tolerance,
            "t={t:.4}: nozzle {p:?} on line {} is {nearest:.4} mm from its segments",
            s.line
        );
        checked += 1;
    }
    assert!(checked > 1500, "only {checked} moments on printing moves");
    arc_offsets.sort_by(f64::total_cmp);
    let median = arc_offsets
        .get(arc_offsets.len() / 2)
        .copied()
        .unwrap_or(0.0);
    assert!(
        arc_offsets.len() > 50 && median < 0.05,
        "{} moments on arcs, median {median:.4} mm off",
        arc_offsets.len()
    );
    assert!(
        phases.iter().all(|&n| n > 50),
        "acceleration, cruise and deceleration all seen: {phases:?}"
    );
}

fn distance(p: [f64; 3], a: [f32; 3], b: [f32; 3]) -> f64 {
    let a = a.map(f64::from);
    let b = b.map(f64::from);
    let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let len2: f64 = ab.iter().map(|v| v * v).sum();
    let t = if len2 > 0.0 {
        (ap.iter().zip(&ab).map(|(x, y)| x * y).sum::<f64>() / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (0..3)
        .map(|i| (ap[i] - ab[i] * t).powi(2))
        .sum::<f64>()
        .sqrt()
}
