//! Placeholder: shaper (being written).
