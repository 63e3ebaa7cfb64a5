//! Build script: tauri-build reads `tauri.conf.json` from the package root (the repository's top,
//! where the project keeps it) and the capabilities from `src-tauri/capabilities/`.

fn main() {
    let attributes =
        tauri_build::Attributes::new().capabilities_path_pattern("./src-tauri/capabilities/**/*");
    if let Err(e) = tauri_build::try_build(attributes) {
        // A build script reports failure by panicking; the message is the build error users see.
        panic!("tauri-build failed: {e:#}");
    }
}
