//! Placeholder: extruder (being written).
