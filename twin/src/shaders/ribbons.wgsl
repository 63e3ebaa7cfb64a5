// Gantry twin: the toolpath as shaded ribbons, one quad per segment.
//
// Six vertices (two triangles) per segment of the polyline: vertex v draws segment v / 6, from
// point v / 6 of the page (its start) to the next point (its end and attributes), pulled from
// the page's storage buffer. The quad faces the camera around the segment's axis, as wide as
// the bead's silhouette (an
// ellipse of the extrusion width and the layer height), extended by half that width at both
// ends and rounded there, so consecutive segments join without gaps. The fragment shader lights
// it as a tube. Printer coordinates (Z up) map to Bevy's (Y up) here: (x, y, z) -> (x, z, -y).

struct Params {
    clip_from_world: mat4x4<f32>,
    camera_pos: vec4<f32>,
    // width px, height px, clip_from_view[1][1], minimum half-width in px
    viewport: vec4<f32>,
    // lowest z drawn, highest z drawn, highlighted layer bottom, top (printer mm)
    z_window: vec4<f32>,
    // xyz: where the segment at modes.x is cut (the nozzle), printer mm
    cut_point: vec4<f32>,
    // x: segment index cut at the nozzle (later ones hidden or ghosted; 0xffffffff: none)
    // y: colour mode (0 feature, 1 speed, 2 layer height z, 3 flow)
    // z: flags (1 travel shown, 2 all ghost, 4 ghost after the cut, 8 highlight a layer)
    // w: unused
    modes: vec4<u32>,
    // speed lo, speed hi (mm/s), flow lo, flow hi (mm^3/s)
    ranges: vec4<f32>,
    // z lo, z hi (for the layer colours), height scale (merged layers), travel half-width px
    z_range: vec4<f32>,
    palette: array<vec4<f32>, 16>,
    ramp: array<vec4<f32>, 5>,
    travel_color: vec4<f32>,
    ghost_color: vec4<f32>,
    // added to every point (printer mm): the moving bed of a bed-slinger
    offset: vec4<f32>,
};

struct Point {
    pos: vec3<f32>,
    attr: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> points: array<Point>;

struct VertexOut {
    @builtin(position) clip: vec4<f32>,
    @location(0) color: vec4<f32>,
    // x: across the ribbon (-1..1), y: along it in half-widths from the middle
    @location(1) uv: vec2<f32>,
    // half the segment's length in half-widths
    @location(2) @interpolate(flat) half_len: f32,
};

fn to_world(p: vec3<f32>) -> vec3<f32> {
    return vec3<f32>(p.x, p.z, -p.y);
}

fn ramp(t: f32) -> vec3<f32> {
    let x = clamp(t, 0.0, 1.0) * 4.0;
    let i = min(u32(floor(x)), 3u);
    let f = x - f32(i);
    return mix(params.ramp[i].rgb, params.ramp[i + 1u].rgb, f);
}

fn hidden() -> VertexOut {
    var out: VertexOut;
    // All four corners at one point outside the clip volume: no fragments.
    out.clip = vec4<f32>(2.0, 2.0, 2.0, 1.0);
    out.color = vec4<f32>(0.0);
    out.uv = vec2<f32>(0.0);
    out.half_len = 0.0;
    return out;
}

@vertex
fn vertex(@builtin(vertex_index) vertex_index: u32) -> VertexOut {
    let segment = vertex_index / 6u;
    // Two triangles over the quad's corners 0 1 2 / 2 1 3 (bit 0: side, bit 1: end).
    var corners = array<u32, 6>(0u, 1u, 2u, 2u, 1u, 3u);
    let corner = corners[vertex_index % 6u];
    let start = points[segment];
    let stop = points[segment + 1u];
    let attr = stop.attr;
    let flags = params.modes.z;
    let hidden_flag = (attr & 32u) != 0u;
    let travel = (attr & 16u) != 0u;
    if (hidden_flag || (travel && (flags & 1u) == 0u)) {
        return hidden();
    }
    var a = start.pos;
    var b = stop.pos;
    let top_z = max(a.z, b.z);
    let cut = params.modes.x;
    if (top_z > params.z_window.y + 1e-4 || top_z < params.z_window.x - 1e-4) {
        return hidden();
    }
    var ghost = (flags & 2u) != 0u;
    if (cut != 0xffffffffu) {
        if (segment > cut) {
            if ((flags & 4u) == 0u) {
                return hidden();
            }
            ghost = true;
        } else if (segment == cut) {
            b = params.cut_point.xyz;
        }
    }

    let feature = attr & 15u;
    let width = f32((attr >> 8u) & 255u) * 0.01;
    let height = f32((attr >> 16u) & 255u) * 0.005 * params.z_range.z;
    let speed = f32((attr >> 24u) & 255u) * 2.0;

    // The bead: its top at the nozzle height, its middle half a layer lower.
    let down = vec3<f32>(0.0, 0.0, 0.5 * height) - params.offset.xyz;
    let wa = to_world(a - down);
    let wb = to_world(b - down);
    let mid = 0.5 * (wa + wb);
    var axis = wb - wa;
    let len = length(axis);
    var d = vec3<f32>(1.0, 0.0, 0.0);
    if (len > 1e-6) {
        d = axis / len;
    }
    let view = normalize(params.camera_pos.xyz - mid);
    var side = cross(d, view);
    if (length(side) < 1e-4) {
        side = cross(d, vec3<f32>(0.0, 1.0, 0.0));
        if (length(side) < 1e-4) {
            side = vec3<f32>(1.0, 0.0, 0.0);
        }
    }
    side = normalize(side);
    // The silhouette of the bead's elliptical cross-section along `side`.
    var horizontal = cross(d, vec3<f32>(0.0, 1.0, 0.0));
    if (length(horizontal) < 1e-4) {
        horizontal = vec3<f32>(1.0, 0.0, 0.0);
    }
    horizontal = normalize(horizontal);
    let vertical = cross(horizontal, d);
    let sh = dot(side, horizontal) * 0.5 * width;
    let sv = dot(side, vertical) * 0.5 * height;
    var r = sqrt(sh * sh + sv * sv);

    // At least a few tenths of a pixel wide, so far-away beads stay visible.
    let mid_clip = params.clip_from_world * vec4<f32>(mid, 1.0);
    let world_per_px = 2.0 * max(mid_clip.w, 1e-4) / (params.viewport.y * params.viewport.z);
    var min_px = params.viewport.w;
    if (travel) {
        min_px = params.z_range.w;
        r = 0.0;
    }
    r = max(r, min_px * world_per_px);

    let end = (corner >> 1u) & 1u;
    let s = f32(corner & 1u) * 2.0 - 1.0;
    var p = wa;
    var along = -(0.5 * len + r);
    if (end == 1u) {
        p = wb;
        along = 0.5 * len + r;
    }
    let e = select(-1.0, 1.0, end == 1u);
    let world = p + side * (s * r) + d * (e * r);

    var base: vec3<f32>;
    let mode = params.modes.y;
    if (travel) {
        base = params.travel_color.rgb;
    } else if (mode == 1u) {
        base = ramp((speed - params.ranges.x) / max(params.ranges.y - params.ranges.x, 1e-3));
    } else if (mode == 2u) {
        base = ramp((top_z - params.z_range.x) / max(params.z_range.y - params.z_range.x, 1e-3));
    } else if (mode == 3u) {
        let area = (width - height) * height + 0.785398 * height * height;
        let flow = max(area, 0.0) * speed;
        base = ramp((flow - params.ranges.z) / max(params.ranges.w - params.ranges.z, 1e-3));
    } else {
        base = params.palette[feature].rgb;
    }
    if (ghost) {
        base = params.ghost_color.rgb;
    } else if ((flags & 8u) != 0u) {
        let in_layer = top_z >= params.z_window.z - 1e-4 && top_z <= params.z_window.w + 1e-4;
        if (!in_layer) {
            base = base * 0.45;
        }
    }

    var out: VertexOut;
    out.clip = params.clip_from_world * vec4<f32>(world, 1.0);
    out.color = vec4<f32>(base, 1.0);
    out.uv = vec2<f32>(s, along / max(r, 1e-6));
    out.half_len = 0.5 * len / max(r, 1e-6);
    return out;
}

@fragment
fn fragment(in: VertexOut) -> @location(0) vec4<f32> {
    // Round caps: outside the half-disc beyond each end is not part of the bead.
    let beyond = abs(in.uv.y) - in.half_len;
    var across = in.uv.x;
    if (beyond > 0.0) {
        let d2 = beyond * beyond + across * across;
        if (d2 > 1.0) {
            discard;
        }
        across = sqrt(d2);
    }
    // A tube lit from the upper left of the view, plus ambient.
    // The middle of a bead shows its colour exactly (legend and pixel tests rely on it).
    let facing = sqrt(max(1.0 - across * across, 0.0));
    let light = clamp(0.4 + 0.6 * facing - 0.12 * in.uv.x, 0.0, 1.0);
    return vec4<f32>(in.color.rgb * light, 1.0);
}
