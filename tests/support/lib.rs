//! Helpers for the cross-cutting suite in `tests/`: where the lesson
//! binaries are, which lessons exist, and what their `--help` declares.
//!
//! A package's tests get `CARGO_BIN_EXE_<name>` only for the package's own
//! binaries, so this suite finds the lessons' binaries itself: `cargo test
//! --workspace` builds every lesson's binary (each lesson has integration
//! tests, which need it) into the same target directory as this suite.

use std::path::PathBuf;

/// Every lesson, in learning order, with the seed's number ("-" for the
/// lessons the seed does not have). `every_crate_is_listed` keeps this in
/// step with `crates/`.
pub const LESSONS: &[(&str, &str)] = &[
    ("basic_process", "01"),
    ("multiple_processes", "02"),
    ("zombie", "14"),
    ("orphan", "13"),
    ("pipe_communication", "06"),
    ("queue_communication", "05"),
    ("shared_value", "07"),
    ("shared_array", "08"),
    ("manager", "09"),
    ("process_lock", "10"),
    ("process_semaphore", "11"),
    ("process_barrier", "12"),
    ("deadlock", "03"),
    ("process_pool", "04"),
    ("performance", "-"),
    ("signals", "-"),
    ("named_pipe", "-"),
    ("exec", "-"),
    ("supervisor", "-"),
    ("prefork_server", "-"),
];

/// The extra arguments a lesson runs with in the suite.
pub fn quick_args(name: &str) -> &'static [&'static str] {
    match name {
        "performance" => &["--quick"],
        _ => &[],
    }
}

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

/// A numeric option as `--help` shows it: `--workers N  ... (1-64, default 3)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericOption {
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub whole: bool,
}

/// The numeric options a lesson's `--help` text declares, with their ranges.
pub fn numeric_options(help: &str) -> Vec<NumericOption> {
    let mut found = Vec::new();
    for line in help.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(value)) = (words.first(), words.get(1)) else {
            continue;
        };
        if !name.starts_with("--") || !matches!(*value, "N" | "X") {
            continue;
        }
        let Some(range) = line.rsplit_once('(').and_then(|(_, r)| r.split(',').next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(min), Ok(max)) = (lo.trim().parse(), hi.trim().parse()) else {
            continue;
        };
        found.push(NumericOption {
            name: name.to_string(),
            min,
            max,
            whole: *value == "N",
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_from_help() {
        let help = "Options:\n  --workers N        children (1-64, default 3)\n  --pace X           scale (0-100, default 1); env LESSON_PACE\n  --quick            fast\n";
        let opts = numeric_options(help);
        assert_eq!(opts.len(), 2);
        assert_eq!(
            opts[0],
            NumericOption {
                name: "--workers".into(),
                min: 1.0,
                max: 64.0,
                whole: true
            }
        );
        assert_eq!(opts[1].name, "--pace");
        assert!(!opts[1].whole);
    }
}
