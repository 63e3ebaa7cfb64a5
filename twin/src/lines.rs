//! Line meshes: every line the twin draws (toolpath, volume edges, axes) is one `LineList` mesh with
//! a colour per vertex and an unlit material.
//!
//! Coordinates: printers use X right, Y away from the viewer, Z up; Bevy uses Y up. [`to_bevy`]
//! maps printer millimetres to Bevy world units (1 unit = 1 mm) once, here, for the whole twin.

use bevy::asset::RenderAssetUsages;
use bevy::mesh::PrimitiveTopology;
use bevy::prelude::*;

/// Printer coordinates (X, Y, Z in mm) to Bevy's (X right, Y up, −Z away).
pub fn to_bevy(p: [f32; 3]) -> Vec3 {
    Vec3::new(p[0], p[2], -p[1])
}

/// Collects line segments with colours and turns them into a mesh.
#[derive(Debug, Default)]
pub struct LineBuilder {
    positions: Vec<[f32; 3]>,
    colors: Vec<[f32; 4]>,
}

impl LineBuilder {
    /// A builder with room for `segments` lines.
    pub fn with_capacity(segments: usize) -> Self {
        Self {
            positions: Vec::with_capacity(segments * 2),
            colors: Vec::with_capacity(segments * 2),
        }
    }

    /// Adds a line between two points in printer coordinates.
    pub fn line(&mut self, a: [f32; 3], b: [f32; 3], color: Color) {
        let c = LinearRgba::from(color).to_f32_array();
        self.positions.push(to_bevy(a).to_array());
        self.positions.push(to_bevy(b).to_array());
        self.colors.push(c);
        self.colors.push(c);
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.positions.len() / 2
    }

    /// Whether no line was added.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The finished mesh.
    pub fn build(self) -> Mesh {
        Mesh::new(PrimitiveTopology::LineList, RenderAssetUsages::RENDER_WORLD)
            .with_inserted_attribute(Mesh::ATTRIBUTE_POSITION, self.positions)
            .with_inserted_attribute(Mesh::ATTRIBUTE_COLOR, self.colors)
    }
}

/// The unlit material every line mesh uses: vertex colours shown as they are.
pub fn line_material() -> StandardMaterial {
    StandardMaterial {
        base_color: Color::WHITE,
        unlit: true,
        ..default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_axes_map_to_bevy_axes() {
        assert_eq!(to_bevy([1.0, 2.0, 3.0]), Vec3::new(1.0, 3.0, -2.0));
    }

    #[test]
    fn builder_makes_two_vertices_per_line() {
        let mut b = LineBuilder::with_capacity(2);
        b.line([0.0; 3], [1.0, 0.0, 0.0], Color::WHITE);
        b.line([0.0; 3], [0.0, 1.0, 0.0], Color::BLACK);
        assert_eq!(b.len(), 2);
        let mesh = b.build();
        assert_eq!(mesh.count_vertices(), 4);
        assert_eq!(mesh.primitive_topology(), PrimitiveTopology::LineList);
    }
}
