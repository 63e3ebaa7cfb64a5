//! The twin's offscreen render, checked on its pixels: the toolhead is drawn where the planner
//! says it is at a time t (seen through a fixed camera), a known feature region has its
//! feature's colour, and the layer slider hides everything above layer N.
//!
//! These tests need a Vulkan driver (Mesa's lavapipe is enough, no GPU and no display): `cargo
//! xtask test` installs it and runs them with `--include-ignored`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_twin::camera::{Orbit, Preset, project};
use gantry_twin::machine::Machine;
use gantry_twin::{SceneInfo, load_config};

struct Picture {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Picture {
    fn pixels(&self) -> impl Iterator<Item = (usize, usize, [u8; 3])> + '_ {
        self.rgb
            .chunks_exact(3)
            .enumerate()
            .map(|(i, p)| (i % self.width, i / self.width, [p[0], p[1], p[2]]))
    }
}

fn read_png(path: &Path) -> Picture {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("the PNG exists"),
    ));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb, "the twin writes RGB");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Picture {
        width: info.width as usize,
        height: info.height as usize,
        rgb: buf,
    }
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("twin-screenshots");
    std::fs::create_dir_all(&dir).expect("output folder");
    dir
}

const SIZE: (u32, u32) = (1280, 800);

/// Renders `gantry twin` with `args` to `name`.png and reads it back.
fn render(gcode: Option<&Path>, name: &str, args: &[&str]) -> Picture {
    let out = out_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.arg("twin");
    if let Some(g) = gcode {
        cmd.arg(g);
    }
    let size = format!("{}x{}", SIZE.0, SIZE.1);
    let status = cmd
        .args(["--size", &size, "--screenshot"])
        .arg(&out)
        .args(args)
        .status()
        .expect("gantry twin runs");
    assert!(
        status.success(),
        "gantry twin --screenshot failed ({status})"
    );
    let pic = read_png(&out);
    assert_eq!((pic.width, pic.height), (SIZE.0 as usize, SIZE.1 as usize));
    pic
}

fn write_gcode(name: &str, text: &str) -> PathBuf {
    let path = out_dir().join(name);
    std::fs::write(&path, text).expect("write G-code");
    path
}

/// The simulated printer's scene (the twin's default printer.cfg).
fn scene() -> SceneInfo {
    let config = load_config(None).expect("the simulated printer's config");
    SceneInfo::new("test", Machine::from_config(&config).expect("machine"))
}

#[derive(Debug, Default)]
struct Region {
    count: usize,
    sum: (f64, f64),
    min: (usize, usize),
    max: (usize, usize),
}

impl Region {
    fn centre(&self) -> (f64, f64) {
        (
            self.sum.0 / self.count as f64,
            self.sum.1 / self.count as f64,
        )
    }
}

fn region(pic: &Picture, pred: impl Fn([u8; 3]) -> bool) -> Region {
    let mut r = Region {
        min: (usize::MAX, usize::MAX),
        ..Region::default()
    };
    for (x, y, p) in pic.pixels() {
        if pred(p) {
            r.count += 1;
            r.sum.0 += x as f64;
            r.sum.1 += y as f64;
            r.min = (r.min.0.min(x), r.min.1.min(y));
            r.max = (r.max.0.max(x), r.max.1.max(y));
        }
    }
    r
}

/// The nozzle tip marker: unlit magenta (255, 0, 255).
fn is_tip([r, g, b]: [u8; 3]) -> bool {
    r > 200 && g < 70 && b > 200
}

/// The bed, sRGB (0.16, 0.17, 0.19) = (41, 43, 48).
fn is_bed([r, g, b]: [u8; 3]) -> bool {
    r.abs_diff(41) <= 4 && g.abs_diff(43) <= 4 && b.abs_diff(48) <= 4
}

/// Near the colour `c` in every channel (a bead's lit middle shows its colour as authored).
fn near(c: [u8; 3], tolerance: u8) -> impl Fn([u8; 3]) -> bool {
    move |p| (0..3).all(|i| p[i].abs_diff(c[i]) <= tolerance)
}

/// A hue test that holds across a bead's shading: yellow (inner wall, sRGB (1.0, 0.9, 0.3): r ≈
/// g ≫ b; the hotend's brass, (0.85, 0.65, 0.25), is not).
fn is_yellowish([r, g, b]: [u8; 3]) -> bool {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    r > 60.0 && g > 0.83 * r && b < 0.5 * g
}

/// Red (top surface, r ≫ g ≈ b).
fn is_reddish([r, g, b]: [u8; 3]) -> bool {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    r > 60.0 && g < 0.45 * r && b < 0.45 * r
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn toolhead_is_where_the_planner_puts_it_at_time_t() {
    // A long X move at 500 mm/s²: it takes 0.6 s and 90 mm to reach 300 mm/s, so the position
    // over time is plainly not a constant speed.
    let gcode = "G90\nM204 S500\nG1 Z10 F600\nG1 X20 Y110 F6000\nG4 P200\nG1 X200 F18000\n";
    let path = write_gcode("toolhead.gcode", gcode);
    let config = load_config(None).expect("config");
    let timeline = gantry_twin::timeline::plan(&config, gcode.as_bytes()).expect("plan");
    let m = *timeline
        .moves()
        .iter()
        .find(|m| m.end_mm[0] == 200.0)
        .expect("the long move");
    assert_eq!(m.accel, 500.0, "M204 sets the acceleration");
    let start = timeline.start_time();
    let info = scene();
    let orbit = Orbit::preset(&info, Preset::Iso, None);
    for (name, t) in [
        ("accelerating", m.print_time + 0.4),
        ("decelerating", m.end_time() - 0.3),
    ] {
        let sample = timeline.sample(t);
        let at = format!("{:.6}s", t - start);
        let pic = render(
            Some(&path),
            &format!("toolhead-{name}"),
            &["--at", &at, "--no-hud"],
        );
        let tip = region(&pic, is_tip);
        assert!(
            tip.count >= 4,
            "{name}: no nozzle tip in the picture: {tip:?}"
        );
        // A bed-slinger's nozzle stays over the middle of Y; the bed carries the print.
        #[allow(clippy::cast_possible_truncation)]
        let expect = project(
            &orbit,
            SIZE,
            [sample.pos_mm[0] as f32, 110.0, sample.pos_mm[2] as f32],
        )
        .expect("in front of the camera");
        let (cx, cy) = tip.centre();
        let off = ((cx - f64::from(expect.x)).powi(2) + (cy - f64::from(expect.y)).powi(2)).sqrt();
        assert!(
            off <= 4.0,
            "{name}: the tip is drawn at ({cx:.1}, {cy:.1}), the planner's position {:?} \
             projects to {expect:?}",
            sample.pos_mm
        );
        // At constant speed the head would be somewhere else entirely.
        let naive_x = if name == "accelerating" {
            20.0 + 300.0 * 0.4
        } else {
            200.0 - 300.0 * 0.3
        };
        let naive = project(&orbit, SIZE, [naive_x, 110.0, 10.0]).expect("in view");
        assert!(
            (f64::from(naive.x) - cx).abs() > 20.0,
            "{name}: a constant-speed toolhead would be drawn at {naive:?}, too close to tell"
        );
    }
}

/// `n` concentric square loops `pitch` mm apart around (cx, cy), half-size `half`, at `z`, with
/// `e_per_mm` of filament per millimetre (the bead's width follows from it and the layer height).
#[allow(clippy::too_many_arguments)]
fn loops(g: &mut String, cx: f64, cy: f64, half: f64, n: usize, pitch: f64, z: f64, e_per_mm: f64) {
    for k in 0..n {
        let h = half - pitch * k as f64;
        let corners = [(-h, -h), (h, -h), (h, h), (-h, h), (-h, -h)];
        writeln!(
            g,
            "G1 X{:.3} Y{:.3} Z{z:.3} F9000",
            cx + corners[0].0,
            cy + corners[0].1
        )
        .ok();
        for (x, y) in &corners[1..] {
            writeln!(
                g,
                "G1 X{:.3} Y{:.3} E{:.5} F1800",
                cx + x,
                cy + y,
                2.0 * h * e_per_mm
            )
            .ok();
        }
    }
}

/// The end of a print: the head parks at the right, over the middle of Y (a bed-slinger's bed
/// then stands where the camera presets expect it).
const PARK: &str = "G1 Z60 F600\nG1 X215 Y110 F9000\n";

/// The pixels of `pic` inside the screen box of the printer box `lo`–`hi` (mm).
fn in_box(pic: &Picture, orbit: &Orbit, lo: [f32; 3], hi: [f32; 3]) -> Vec<[u8; 3]> {
    let mut xs = (f32::MAX, f32::MIN);
    let mut ys = (f32::MAX, f32::MIN);
    for i in 0..8 {
        let c = [
            if i & 1 == 0 { lo[0] } else { hi[0] },
            if i & 2 == 0 { lo[1] } else { hi[1] },
            if i & 4 == 0 { lo[2] } else { hi[2] },
        ];
        let p = project(orbit, SIZE, c).expect("in view");
        xs = (xs.0.min(p.x), xs.1.max(p.x));
        ys = (ys.0.min(p.y), ys.1.max(p.y));
    }
    pic.pixels()
        .filter(|(x, y, _)| {
            (xs.0..=xs.1).contains(&(*x as f32)) && (ys.0..=ys.1).contains(&(*y as f32))
        })
        .map(|(_, _, p)| p)
        .collect()
}

/// A test on a pixel.
type Test = dyn Fn([u8; 3]) -> bool;

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn a_feature_region_has_its_features_colour() {
    // Two squares of 2 mm wide beads (0.467 mm of filament per mm at 0.6 mm layers), 1.8 mm
    // apart: outer wall at (60, 70), solid infill at (150, 70).
    let mut g = String::from(";LAYER_CHANGE\n;Z:0.6\n;HEIGHT:0.6\nM83\nG1 Z0.6 F600\n");
    g.push_str(";TYPE:Outer wall\n");
    loops(&mut g, 60.0, 70.0, 15.0, 8, 1.8, 0.6, 0.467);
    g.push_str(";TYPE:Solid infill\n");
    loops(&mut g, 150.0, 70.0, 15.0, 8, 1.8, 0.6, 0.467);
    g.push_str(PARK);
    let path = write_gcode("features.gcode", &g);
    let pic = render(Some(&path), "features", &["--view", "top", "--no-hud"]);
    let info = scene();
    let orbit = Orbit::preset(&info, Preset::Top, None);
    // Outer wall: sRGB (1.0, 0.49, 0.22); solid infill: (0.59, 0.33, 0.8). The middle of a bead
    // shows its colour exactly; its sides are darker.
    let orange = near([255, 125, 56], 24);
    let purple = near([150, 84, 204], 24);
    let warm = |[r, g, b]: [u8; 3]| r > 80 && g < r && b < g && f32::from(g) > 0.3 * f32::from(r);
    let violet = |[r, g, b]: [u8; 3]| b > 80 && r < b && g < r;
    let cases: [(&str, f32, &Test, &Test, &Test); 2] = [
        ("outer wall", 60.0, &orange, &warm, &purple),
        ("solid infill", 150.0, &purple, &violet, &orange),
    ];
    for (name, cx, exact, hue, other) in cases {
        let px = in_box(&pic, &orbit, [cx - 13.0, 57.0, 0.6], [cx + 13.0, 83.0, 0.6]);
        let n = px.len();
        let exact_n = px.iter().filter(|p| exact(**p)).count();
        let hue_n = px.iter().filter(|p| hue(**p)).count();
        let other_n = px.iter().filter(|p| other(**p)).count();
        assert!(n > 800, "{name}: the region is only {n} pixels");
        assert!(
            exact_n * 8 > n,
            "{name}: {exact_n} of {n} pixels have its exact colour"
        );
        assert!(
            hue_n * 10 > n * 8,
            "{name}: {hue_n} of {n} pixels have its hue"
        );
        assert_eq!(
            other_n, 0,
            "{name}: the other feature's colour is in this region"
        );
    }
    assert!(
        region(&pic, is_bed).count > 1000,
        "the bed shows around the squares"
    );
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn the_layer_slider_hides_everything_above_layer_n() {
    // A 40-layer tower of 1 mm layers: layers 1–20 inner wall (yellow), 21–40 top surface (red).
    let mut g = String::from("M83\n");
    for layer in 1..=40 {
        let z = f64::from(layer);
        write!(g, ";LAYER_CHANGE\n;Z:{z}\n;HEIGHT:1\n").ok();
        g.push_str(if layer <= 20 {
            ";TYPE:Inner wall\n"
        } else {
            ";TYPE:Top surface\n"
        });
        loops(&mut g, 110.0, 110.0, 15.0, 4, 0.45, z, 0.4);
    }
    g.push_str(PARK);
    let path = write_gcode("tower.gcode", &g);
    let info = scene();
    let orbit = Orbit::preset(&info, Preset::Front, None);
    let tower = |pic: &Picture, pred: &dyn Fn([u8; 3]) -> bool| {
        in_box(pic, &orbit, [93.0, 93.0, 0.0], [127.0, 127.0, 45.0])
            .into_iter()
            .filter(|p| pred(*p))
            .count()
    };
    let whole = render(Some(&path), "tower-all", &["--view", "front", "--no-hud"]);
    let (red, yellow) = (tower(&whole, &is_reddish), tower(&whole, &is_yellowish));
    assert!(
        red > 300 && yellow > 300,
        "red {red}, yellow {yellow} pixels"
    );
    // Red is on top. The front face from z = 32 mm up shows nothing of layers 1–20 (the front
    // view looks down at the tower by about 14°, so the top of layer 20, 34 mm deep, reaches
    // up to about z = 29 on screen).
    let upper = |pic: &Picture, pred: &dyn Fn([u8; 3]) -> bool| {
        in_box(pic, &orbit, [93.0, 93.0, 32.0], [127.0, 93.0, 45.0])
            .into_iter()
            .filter(|p| pred(*p))
            .count()
    };
    assert!(upper(&whole, &is_reddish) > 200, "the top half is red");

    let cut = render(
        Some(&path),
        "tower-layer-20",
        &["--view", "front", "--no-hud", "--layer", "20"],
    );
    assert_eq!(tower(&cut, &is_reddish), 0, "layers above 20 are hidden");
    assert!(tower(&cut, &is_yellowish) > 300, "layers 1–20 stay");
    assert_eq!(
        upper(&cut, &|p| is_yellowish(p) || is_reddish(p)),
        0,
        "nothing is drawn above layer 20"
    );
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn sample_print_shows_the_toolpath_over_the_bed() {
    let pic = render(None, "sample", &["--no-hud"]);
    let total = pic.width * pic.height;
    let bed = region(&pic, is_bed);
    // Outer wall orange, inner wall yellow: the sample's box.
    let print = region(&pic, |p| near([255, 125, 56], 60)(p) || is_yellowish(p));
    assert!(
        bed.count * 50 > total,
        "the bed covers under 2% of the picture: {bed:?}"
    );
    assert!(print.count >= 100, "too little of the toolpath: {print:?}");
    let (cx, cy) = print.centre();
    assert!(
        (bed.min.0 as f64..=bed.max.0 as f64).contains(&cx)
            && (bed.min.1 as f64..=bed.max.1 as f64).contains(&cy),
        "toolpath centre ({cx}, {cy}) is not over the bed {bed:?}"
    );
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn live_sim_colours_what_the_sims_steppers_printed() {
    // A 40-layer tower (0.5 mm layers, 0.6 mm beads) printed on the simulated MCU in this
    // process at 100× real time: after 100 s of printer time (about 16 s a layer) the first
    // layers are done and the rest is the planned ghost.
    let mut g = String::from("M83\n");
    for layer in 1..=40 {
        let z = 0.5 * f64::from(layer);
        write!(g, ";LAYER_CHANGE\n;Z:{z}\n;HEIGHT:0.5\n;TYPE:Inner wall\n").ok();
        loops(&mut g, 110.0, 110.0, 15.0, 4, 0.45, z, 0.1);
    }
    let path = write_gcode("live-tower.gcode", &g);
    let pic = render(
        None,
        "live-sim",
        &[
            "--live-sim",
            path.to_str().expect("utf-8 path"),
            "--sim-speed",
            "100",
            "--at",
            "100s",
            "--view",
            "front",
            "--no-hud",
        ],
    );
    let info = scene();
    let orbit = Orbit::preset(&info, Preset::Front, None);
    // The bed-slinger carries the tower in Y, and the nozzle is over it: the tower stands
    // within 110 ± 35 mm of Y in the world.
    let yellow: Vec<(usize, usize)> = pic
        .pixels()
        .filter(|(_, _, p)| is_yellowish(*p))
        .map(|(x, y, _)| (x, y))
        .collect();
    let left = project(&orbit, SIZE, [93.0, 75.0, 0.0]).expect("view");
    let right = project(&orbit, SIZE, [127.0, 75.0, 0.0]).expect("view");
    let on_tower: Vec<_> = yellow
        .iter()
        .filter(|(x, _)| (left.x as usize..=right.x as usize + 2).contains(x))
        .collect();
    assert!(
        on_tower.len() > 60,
        "the first layers are printed: {} pixels",
        on_tower.len()
    );
    // Nothing above 5 mm is printed yet: no bead pixel above where z = 5 mm can appear (the
    // far side of the tower, seen a little from above).
    let limit = project(&orbit, SIZE, [110.0, 145.0, 5.0]).expect("view");
    let top = on_tower.iter().map(|(_, y)| *y).min().unwrap_or(usize::MAX);
    assert!(
        top as f32 >= limit.y,
        "a printed bead at y {top}, above where z = 5 mm can be ({})",
        limit.y
    );
}

/// `gantry serve --sim` in its own data folder, stopped with SIGTERM (so it stops its sim).
struct Served {
    child: std::process::Child,
    ws_url: String,
    token: String,
}

impl Served {
    fn start(name: &str) -> Self {
        use std::io::BufRead as _;
        let data = out_dir().join(format!("{name}-data"));
        let _ = std::fs::remove_dir_all(&data);
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["serve", "--sim"])
            .env("GANTRY_DATA_DIR", &data)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gantry serve --sim starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("its endpoint");
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
        Self {
            child,
            ws_url: v["ws_url"].as_str().expect("ws_url").to_owned(),
            token: v["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Runs `script` through the API (`printer.gcode.script`), waiting for its answer.
    fn gcode(&self, script: &str) {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("{}?token={}", self.ws_url, self.token);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connects");
            let request = serde_json::json!({"jsonrpc": "2.0", "id": 1,
                "method": "printer.gcode.script", "params": {"script": script}});
            ws.send(Message::text(request.to_string()))
                .await
                .expect("send");
            loop {
                let msg = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
                    .await
                    .expect("an answer within 60 s")
                    .expect("open")
                    .expect("a frame");
                if let Message::Text(t) = msg {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
                    if v["id"] == 1 {
                        assert_eq!(v["result"], "ok", "{script}: {v}");
                        return;
                    }
                }
            }
        });
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn live_feed_draws_the_nozzle_where_the_served_printer_is() {
    // The app's printer (`gantry serve --sim`: the simulated MCU with Gantry as its host) homes
    // and moves through the API; the twin, following it, draws the nozzle tip there.
    let served = Served::start("live-feed");
    served.gcode("G28\nG1 X50 Y60 Z10 F6000\nM400");
    let out = out_dir().join("live-feed.png");
    let _ = std::fs::remove_file(&out);
    let size = format!("{}x{}", SIZE.0, SIZE.1);
    let status = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "twin",
            "--live",
            &served.ws_url,
            "--no-hud",
            "--size",
            &size,
        ])
        .env("GANTRY_API_TOKEN", &served.token)
        .arg("--screenshot")
        .arg(&out)
        .status()
        .expect("gantry twin runs");
    assert!(
        status.success(),
        "gantry twin --live --screenshot failed ({status})"
    );
    let pic = read_png(&out);
    let tip = region(&pic, is_tip);
    assert!(tip.count >= 4, "no nozzle tip in the picture: {tip:?}");
    let orbit = Orbit::preset(&scene(), Preset::Iso, None);
    // A bed-slinger's nozzle stays over the middle of Y; the bed carries Y.
    let expect = project(&orbit, SIZE, [50.0, 110.0, 10.0]).expect("in view");
    let (cx, cy) = tip.centre();
    let off = ((cx - f64::from(expect.x)).powi(2) + (cy - f64::from(expect.y)).powi(2)).sqrt();
    assert!(
        off <= 4.0,
        "the tip is drawn at ({cx:.1}, {cy:.1}); X50 Z10 projects to {expect:?}"
    );
}
