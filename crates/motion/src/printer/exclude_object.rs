//! `[exclude_object]`: object labels (`EXCLUDE_OBJECT_DEFINE`, `_START`, `_END`) and cancelling
//! objects mid-print (`EXCLUDE_OBJECT NAME=`). Like Klipper, the first exclusion installs a move
//! transform between G-code and the toolhead: moves inside an excluded object are dropped while
//! their positions are tracked, and the offsets that builds up (X/Y/Z, and E including retraction
//! differences) are unwound on the first moves back in a printed object. The transform watches a
//! few extrusion moves before it starts excluding, to learn the extruder's state.

use super::{Command, CommandError, Printer};
use crate::lookahead::AXES;

/// Extrusion moves the transform watches before it may exclude anything.
const INITIAL_EXTRUSION_MOVES: u32 = 5;

/// A defined object: its upper-cased name and the raw extra parameters (CENTER, POLYGON, …).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ObjectDef {
    pub(super) name: String,
    /// `CENTER=x,y` as numbers, when given and readable.
    pub(super) center: Option<Vec<f64>>,
    /// `POLYGON=[[x,y],…]` as points, when given and readable.
    pub(super) polygon: Option<Vec<[f64; 2]>>,
}

/// The move transform's state (present once an object has been excluded).
#[derive(Clone, Debug, Default)]
struct Transform {
    extrusion_offset: [f64; AXES],
    max_position_extruded: f64,
    max_position_excluded: f64,
    extruder_adj: f64,
    initial_extrusion_moves: u32,
    last_position: [f64; AXES],
    last_position_extruded: [f64; AXES],
    last_position_excluded: [f64; AXES],
}

/// Objects, exclusions and the transform.
#[derive(Clone, Debug, Default)]
pub(super) struct ExcludeObject {
    pub(super) objects: Vec<ObjectDef>,
    pub(super) excluded: Vec<String>,
    pub(super) current: Option<String>,
    in_excluded_region: bool,
    transform: Option<Transform>,
}

impl ExcludeObject {
    fn add_object(&mut self, def: ObjectDef) {
        self.objects.push(def);
        self.objects.sort_by(|a, b| a.name.cmp(&b.name));
    }

    fn test_in_excluded_region(&self) -> bool {
        let Some(t) = &self.transform else {
            return false;
        };
        self.current
            .as_ref()
            .is_some_and(|c| self.excluded.iter().any(|e| e == c))
            && t.initial_extrusion_moves == 0
    }

    /// Whether moves go through the transform.
    pub(super) fn active(&self) -> bool {
        self.transform.is_some()
    }

    /// The G-code side position from the toolhead's (`get_position` of the transform).
    pub(super) fn position(&mut self, toolhead_pos: [f64; AXES]) -> [f64; AXES] {
        let Some(t) = &mut self.transform else {
            return toolhead_pos;
        };
        for ((p, th), off) in t
            .last_position
            .iter_mut()
            .zip(toolhead_pos)
            .zip(t.extrusion_offset)
        {
            *p = th + off;
        }
        t.last_position
    }

    /// Where a G-code move to `newpos` should take the toolhead, or `None` to drop it.
    fn transform_move(&mut self, newpos: [f64; AXES]) -> Option<[f64; AXES]> {
        let excluded = self.test_in_excluded_region();
        let in_region = self.in_excluded_region;
        let t = self.transform.as_mut()?;
        if excluded {
            self.in_excluded_region = true;
            // Ignore the move, tracking what it would have done.
            for ((off, new), from) in t
                .extrusion_offset
                .iter_mut()
                .zip(newpos)
                .zip(t.last_position_extruded)
                .take(3)
            {
                *off = new - from;
            }
            t.extrusion_offset[3] = t.extrusion_offset[3] + newpos[3] - t.last_position[3];
            t.last_position = newpos;
            t.last_position_excluded = newpos;
            t.max_position_excluded = t.max_position_excluded.max(newpos[3]);
            return None;
        }
        if in_region {
            self.in_excluded_region = false;
            // Compensate retraction differences between the excluded and the printed object.
            t.extruder_adj = t.max_position_excluded
                - t.last_position_excluded[3]
                - (t.max_position_extruded - t.last_position_extruded[3]);
        }
        if t.initial_extrusion_moves > 0 && t.last_position[3] != newpos[3] {
            t.initial_extrusion_moves -= 1;
        }
        t.last_position = newpos;
        t.last_position_extruded = newpos;
        t.max_position_extruded = t.max_position_extruded.max(newpos[3]);
        let off = &mut t.extrusion_offset;
        if (off[0] != 0.0 || off[1] != 0.0)
            && (newpos[0] != t.last_position_excluded[0]
                || newpos[1] != t.last_position_excluded[1])
        {
            for (i, o) in off.iter_mut().enumerate() {
                if i != 3 {
                    *o = 0.0;
                }
            }
            off[3] += t.extruder_adj;
            t.extruder_adj = 0.0;
        }
        if off[2] != 0.0 && newpos[2] != t.last_position_excluded[2] {
            off[2] = 0.0;
        }
        if t.extruder_adj != 0.0 && newpos[3] != t.last_position_excluded[3] {
            off[3] += t.extruder_adj;
            t.extruder_adj = 0.0;
        }
        let mut tx = newpos;
        for (v, o) in tx.iter_mut().zip(off.iter()) {
            *v -= o;
        }
        Some(tx)
    }
}

/// `CENTER=150,150` → numbers (Klipper reads it as JSON `[150,150]`).
fn parse_center(text: &str) -> Option<Vec<f64>> {
    text.split(',')
        .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect()
}

/// `POLYGON=[[x,y],[x,y]]` → points.
fn parse_polygon(text: &str) -> Option<Vec<[f64; 2]>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    let mut points = Vec::new();
    for part in inner.split(']') {
        let part = part.trim().trim_start_matches(',').trim();
        if part.is_empty() {
            continue;
        }
        let pair = part.strip_prefix('[')?;
        let mut it = pair.split(',').map(|v| v.trim().parse::<f64>().ok());
        let (Some(Some(x)), Some(Some(y)), None) = (it.next(), it.next(), it.next()) else {
            return None;
        };
        points.push([x, y]);
    }
    Some(points)
}

impl Printer {
    /// A G-code move through the transforms (Klipper's `move_with_transform`).
    pub(super) fn move_with_transform(
        &mut self,
        pos: [f64; AXES],
        speed: f64,
    ) -> Result<(), CommandError> {
        let target = match self.exclude_object.as_mut() {
            Some(ex) if ex.active() => ex.transform_move(pos),
            _ => Some(pos),
        };
        if let Some(target) = target {
            self.toolhead.move_to(target, speed, self.current_line)?;
        }
        Ok(())
    }

    /// The G-code side position of the toolhead (Klipper's `position_with_transform`).
    pub(super) fn position_with_transform(&mut self) -> [f64; AXES] {
        let pos = self.toolhead.commanded_pos;
        match self.exclude_object.as_mut() {
            Some(ex) => ex.position(pos),
            None => pos,
        }
    }

    fn exclude(&mut self, name: &str) {
        let pos = self.toolhead.commanded_pos;
        let Some(ex) = self.exclude_object.as_mut() else {
            return;
        };
        if ex.transform.is_none() {
            // Registering the transform: no offsets yet, every tracked position is the toolhead's.
            ex.transform = Some(Transform {
                initial_extrusion_moves: INITIAL_EXTRUSION_MOVES,
                last_position: pos,
                last_position_extruded: pos,
                last_position_excluded: pos,
                ..Transform::default()
            });
        }
        if !ex.excluded.iter().any(|e| e == name) {
            ex.excluded.push(name.to_owned());
            ex.excluded.sort();
        }
        self.respond_info(&format!("Excluding object {name}"));
    }

    fn reset_exclude_file(&mut self) {
        let had_transform = self
            .exclude_object
            .as_ref()
            .is_some_and(ExcludeObject::active);
        if let Some(ex) = self.exclude_object.as_mut() {
            ex.objects.clear();
            ex.excluded.clear();
            ex.current = None;
            ex.in_excluded_region = false;
            ex.transform = None;
        }
        if had_transform {
            self.gcode.last_position = self.position_with_transform();
        }
    }

    pub(super) fn cmd_exclude_object_define(
        &mut self,
        cmd: &Command<'_>,
    ) -> Result<(), CommandError> {
        if cmd.param("RESET").is_some_and(|v| !v.is_empty()) {
            self.reset_exclude_file();
            return Ok(());
        }
        let name = cmd.param("NAME").as_deref().unwrap_or("").to_uppercase();
        if name.is_empty() {
            let names: Vec<String> = self
                .exclude_object
                .iter()
                .flat_map(|e| e.objects.iter().map(|o| o.name.clone()))
                .collect();
            self.respond_info(&format!("Known objects: {}", names.join(" ")));
            return Ok(());
        }
        let center = match cmd.param("CENTER") {
            Some(c) => Some(parse_center(&c).ok_or_else(|| {
                CommandError::User(format!("Unable to parse CENTER '{c}' of object {name}"))
            })?),
            None => None,
        };
        let polygon = match cmd.param("POLYGON") {
            Some(p) => Some(parse_polygon(&p).ok_or_else(|| {
                CommandError::User(format!("Unable to parse POLYGON of object {name}"))
            })?),
            None => None,
        };
        if let Some(ex) = self.exclude_object.as_mut() {
            ex.add_object(ObjectDef {
                name,
                center,
                polygon,
            });
        }
        Ok(())
    }

    pub(super) fn cmd_exclude_object_start(
        &mut self,
        cmd: &Command<'_>,
    ) -> Result<(), CommandError> {
        let Some(name) = cmd.param("NAME") else {
            return Err(CommandError::User(format!(
                "Error on '{}': missing NAME",
                cmd.raw()
            )));
        };
        let name = name.to_uppercase();
        if let Some(ex) = self.exclude_object.as_mut() {
            if !ex.objects.iter().any(|o| o.name == name) {
                ex.add_object(ObjectDef {
                    name: name.clone(),
                    center: None,
                    polygon: None,
                });
            }
            ex.current = Some(name);
        }
        Ok(())
    }

    pub(super) fn cmd_exclude_object_end(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let Some(ex) = self.exclude_object.as_mut() else {
            return Ok(());
        };
        if ex.current.is_none() && ex.active() {
            self.respond_info("EXCLUDE_OBJECT_END called, but no object is currently active");
            return Ok(());
        }
        let current = ex.current.take();
        if let Some(name) = cmd.param("NAME") {
            let name = name.to_uppercase();
            if Some(&name) != current.as_ref() {
                let cur = current.as_deref().unwrap_or("None").to_owned();
                self.respond_info(&format!(
                    "EXCLUDE_OBJECT_END NAME={name} does not match the current object NAME={cur}"
                ));
            }
        }
        Ok(())
    }

    pub(super) fn cmd_exclude_object(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let name = cmd.param("NAME").as_deref().unwrap_or("").to_uppercase();
        let reset = cmd.param("RESET").is_some_and(|v| !v.is_empty());
        let current = cmd.param("CURRENT").is_some_and(|v| !v.is_empty());
        if reset {
            if name.is_empty() {
                if let Some(ex) = self.exclude_object.as_mut() {
                    ex.excluded.clear();
                }
            } else {
                self.respond_info(&format!("Unexcluding object {name}"));
                if let Some(ex) = self.exclude_object.as_mut() {
                    ex.excluded.retain(|e| *e != name);
                }
            }
        } else if !name.is_empty() {
            let already = self
                .exclude_object
                .as_ref()
                .is_some_and(|ex| ex.excluded.contains(&name));
            if !already {
                self.exclude(&name);
            }
        } else if current {
            let cur = self.exclude_object.as_ref().and_then(|e| e.current.clone());
            match cur {
                Some(c) => self.exclude(&c),
                None => {
                    return Err(CommandError::User(
                        "There is no current object to cancel".into(),
                    ));
                }
            }
        } else {
            let list = self
                .exclude_object
                .as_ref()
                .map(|e| e.excluded.join(" "))
                .unwrap_or_default();
            self.respond_info(&format!("Excluded objects: {list}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_center, parse_polygon};

    #[test]
    fn object_geometry_parses() {
        assert_eq!(parse_center("150,150.5"), Some(vec![150.0, 150.5]));
        assert_eq!(
            parse_polygon("[[39.4,185.0],[39.5,114.9]]"),
            Some(vec![[39.4, 185.0], [39.5, 114.9]])
        );
        assert_eq!(parse_polygon("[]"), Some(vec![]));
        assert_eq!(parse_polygon("[[1,2],[3]]"), None);
        assert_eq!(parse_center("a,b"), None);
    }
}
