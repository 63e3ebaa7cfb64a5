//! Helpers shared by the oracle tests.

use gantry_proto::Dictionary;

/// The messages of `stream` up to and including `finalize_config`, as text.
pub(crate) fn config_phase_of(dict: &Dictionary, stream: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut done = false;
    gantry_proto::dump::dump(dict, stream, |e| {
        if let gantry_proto::dump::Event::Message(m) = e
            && !done
        {
            done = m.starts_with("finalize_config");
            lines.push(m.to_owned());
        }
    });
    lines
}
