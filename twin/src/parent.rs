//! The twin ends with the app that started it: with `until_stdin_closes`, core's
//! [`gantry_core::lifeline`] raises a flag when standard input ends — the desktop app holds the
//! other end of that pipe, which the operating system closes however the app ends, a crash or a
//! kill included — and a system then ends the twin as its window's close button would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bevy::prelude::*;

/// Raised once standard input has ended.
#[derive(Resource, Debug, Clone, Default)]
struct ParentGone(Arc<AtomicBool>);

/// Watches standard input and ends the app when it ends.
pub fn plugin(app: &mut App) {
    let gone = ParentGone::default();
    if let Err(e) = gantry_core::lifeline::raise_when_stdin_ends(Arc::clone(&gone.0)) {
        warn!("the twin will not notice its app ending: cannot start a thread ({e})");
    }
    app.insert_resource(gone)
        .add_systems(Update, end_with_parent);
}

fn end_with_parent(gone: Res<ParentGone>, mut exit: MessageWriter<AppExit>) {
    if gone.0.load(Ordering::Relaxed) {
        info!("the app that started the twin has ended; closing");
        exit.write(AppExit::Success);
    }
}
