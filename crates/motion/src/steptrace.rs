//! Placeholder: steptrace (being written).
