//! Helpers for the cross-cutting suite in `tests/`: where the lesson
//! binaries are, and which lessons exist.
//!
//! A package's tests get `CARGO_BIN_EXE_<name>` only for the package's own
//! binaries, so this suite finds the lessons' binaries itself: `cargo test
//! --workspace` builds every lesson's binary (each lesson has integration
//! tests, which need it) into the same target directory as this suite.

use std::path::PathBuf;

/// The lessons, in learning order, as (crate, seed number). Later lessons
/// are added here as they land.
pub const LESSONS: &[(&str, &str)] = &[("zombie", "13")];

/// The directory holding the lesson binaries: the parent of `deps/`, where
/// this test executable lives.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_path_buf()
}

/// The path of lesson `name`'s binary; panics with the fix if it was not built.
pub fn lesson_bin(name: &str) -> String {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the suite with `cargo test --workspace` so the lessons are built",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The repository's top folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
