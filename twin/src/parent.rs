//! The twin ends with the app that started it: with `until_stdin_closes`, a thread reads
//! standard input to its end — the desktop app holds the other end of that pipe, which the
//! operating system closes however the app ends, a crash or a kill included — and a system then
//! ends the twin as its window's close button would.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bevy::prelude::*;

/// Raised once standard input has ended.
#[derive(Resource, Debug, Clone, Default)]
pub struct ParentGone(Arc<AtomicBool>);

impl ParentGone {
    /// Whether standard input has ended.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Watches standard input from a thread of its own and ends the app when it ends.
pub fn plugin(app: &mut App) {
    let gone = ParentGone::default();
    let flag = Arc::clone(&gone.0);
    let watch = std::thread::Builder::new()
        .name("twin-stdin".into())
        .spawn(move || {
            // Whatever arrives is ignored; the end of it (or an error reading it) is the signal.
            let mut buffer = [0_u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
            flag.store(true, Ordering::Relaxed);
        });
    if let Err(e) = watch {
        warn!("the twin will not notice its app ending: cannot start a thread ({e})");
    }
    app.insert_resource(gone)
        .add_systems(Update, end_with_parent);
}

fn end_with_parent(gone: Res<ParentGone>, mut exit: MessageWriter<AppExit>) {
    if gone.is_raised() {
        info!("the app that started the twin has ended; closing");
        exit.write(AppExit::Success);
    }
}
