//! Placeholder: stepcompress (being written).
