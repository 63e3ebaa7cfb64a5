//! The twin's offscreen render, checked on its pixels: `gantry twin --screenshot` of the bundled
//! sample shows the toolpath's extrusion colour over the bed; a file without extrusion shows none.
//!
//! These tests need a Vulkan driver (Mesa's lavapipe is enough, no GPU and no display): `cargo
//! xtask test` installs it and runs them with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn render(gcode: Option<&Path>, out: &Path) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.arg("twin");
    if let Some(g) = gcode {
        cmd.arg(g);
    }
    let status = cmd
        .args(["--size", "640x400", "--screenshot"])
        .arg(out)
        .status()
        .expect("gantry twin runs");
    assert!(
        status.success(),
        "gantry twin --screenshot failed ({status})"
    );
}

/// The extrusion colour, sRGB (1.0, 0.45, 0.05) = (255, 115, 13), with room for anti-aliasing.
fn is_toolpath_orange([r, g, b]: [u8; 3]) -> bool {
    r >= 200 && (70..=160).contains(&g) && b <= 70
}

/// The bed, sRGB (0.16, 0.17, 0.19) = (41, 43, 48).
fn is_bed([r, g, b]: [u8; 3]) -> bool {
    r.abs_diff(41) <= 4 && g.abs_diff(43) <= 4 && b.abs_diff(48) <= 4
}

#[derive(Debug, Default)]
struct Region {
    count: usize,
    min: (usize, usize),
    max: (usize, usize),
}

fn region(pic: &Picture, pred: impl Fn([u8; 3]) -> bool) -> Region {
    let mut r = Region {
        count: 0,
        min: (usize::MAX, usize::MAX),
        max: (0, 0),
    };
    for (x, y, p) in pic.pixels() {
        if pred(p) {
            r.count += 1;
            r.min = (r.min.0.min(x), r.min.1.min(y));
            r.max = (r.max.0.max(x), r.max.1.max(y));
        }
    }
    r
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn sample_print_shows_the_toolpath_over_the_bed() {
    let out = out_dir().join("sample.png");
    let _ = std::fs::remove_file(&out);
    render(None, &out);
    let pic = read_png(&out);
    assert_eq!((pic.width, pic.height), (640, 400));

    let total = pic.width * pic.height;
    let bed = region(&pic, is_bed);
    let toolpath = region(&pic, is_toolpath_orange);
    assert!(
        bed.count * 50 > total,
        "the bed covers under 2% of the picture: {bed:?}"
    );
    assert!(
        toolpath.count >= 100,
        "too little of the toolpath colour: {toolpath:?}"
    );
    // The print sits in the middle of the bed: its pixels lie within the bed's extent on screen.
    let centre = (
        (toolpath.min.0 + toolpath.max.0) / 2,
        (toolpath.min.1 + toolpath.max.1) / 2,
    );
    assert!(
        (bed.min.0..=bed.max.0).contains(&centre.0) && (bed.min.1..=bed.max.1).contains(&centre.1),
        "toolpath centre {centre:?} is not over the bed {bed:?}"
    );
    // Not blank: background, bed, edges, axes and the toolpath give many distinct colours.
    let mut colours: Vec<[u8; 3]> = pic.pixels().map(|(_, _, p)| p).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 20,
        "only {} distinct colours: a blank frame?",
        colours.len()
    );
}

#[test]
#[ignore = "needs a Vulkan driver (lavapipe); cargo xtask test runs it"]
fn travel_only_file_shows_no_extrusion_colour() {
    let dir = out_dir();
    let gcode = dir.join("travel-only.gcode");
    std::fs::write(
        &gcode,
        "G28\nG1 Z0.2 F600\nG1 X100 Y100 F6000\nG1 X120 Y120\nG1 X100 Y120\n",
    )
    .expect("write G-code");
    let out = dir.join("travel-only.png");
    let _ = std::fs::remove_file(&out);
    render(Some(&gcode), &out);
    let pic = read_png(&out);
    assert!(region(&pic, is_bed).count > 0, "the bed is drawn");
    assert_eq!(
        region(&pic, is_toolpath_orange).count,
        0,
        "travel moves must not look like extrusion"
    );
}
