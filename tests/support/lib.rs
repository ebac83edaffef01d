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

/// The extra arguments a lesson or example runs with in the suite.
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

/// The examples of lesson `lesson`: the file names (without `.rs`) in
/// `crates/<lesson>/examples/`, sorted. Each is a program of its own,
/// `cargo run -p <lesson> --example <name>`.
pub fn examples(lesson: &str) -> Vec<String> {
    let dir = repo_root().join("crates").join(lesson).join("examples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().expect("name").to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// Every program of lesson `lesson`: its binary first, then its examples.
pub fn programs(lesson: &str) -> Vec<String> {
    std::iter::once(lesson.to_string())
        .chain(examples(lesson))
        .collect()
}

/// Every program of every lesson, in learning order.
pub fn all_programs() -> Vec<String> {
    LESSONS.iter().flat_map(|(l, _)| programs(l)).collect()
}

/// The path of lesson `name`'s binary, or of the example `name`
/// (`target/<profile>/examples/<name>`); panics with the fix if it was not
/// built (`cargo build` and `cargo test --test x` build no examples).
pub fn lesson_bin(name: &str) -> String {
    let lesson = LESSONS.iter().any(|(l, _)| *l == name);
    let path = if lesson {
        bin_dir().join(name)
    } else {
        bin_dir().join("examples").join(name)
    };
    assert!(
        path.is_file(),
        "{} is missing: run the suite with `cargo test --workspace`, which builds every lesson and example",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The repository's top folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A numeric option as `--help` shows it: `--workers <N>  ... (1-64) [default: 3]`
/// (clap's shape: `N` for a whole number, `X` for a decimal, the range in
/// parentheses in the help text, which may go on over the next lines).
#[derive(Debug, Clone, PartialEq)]
pub struct NumericOption {
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub whole: bool,
}

/// The `(lo-hi` range at the end of an option's help text, if any.
fn stated_range(text: &str) -> Option<(f64, f64)> {
    let (_, after) = text.rsplit_once('(')?;
    let range = after.split([')', ',']).next()?;
    let (lo, hi) = range.split_once('-')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

/// The numeric options a lesson's `--help` text declares, with their ranges.
pub fn numeric_options(help: &str) -> Vec<NumericOption> {
    // Each option's entry: its line, and the indented lines that go on with
    // its help text.
    let mut entries: Vec<(String, bool, String)> = Vec::new();
    for line in help.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let opt = words.iter().position(|w| w.starts_with("--"));
        match opt {
            Some(i) if line.trim_start().starts_with('-') => {
                let name = words[i].trim_end_matches(',').to_string();
                let value = words.get(i + 1).copied().unwrap_or_default();
                let value = value.trim_start_matches('<').trim_end_matches('>');
                if matches!(value, "N" | "X") {
                    let text = words[i + 2..].join(" ");
                    entries.push((name, value == "N", text));
                } else {
                    entries.push((String::new(), false, String::new()));
                }
            }
            _ => {
                if let Some(last) = entries.last_mut() {
                    if line.starts_with(' ') {
                        last.2.push(' ');
                        last.2.push_str(line.trim());
                    }
                }
            }
        }
    }
    entries
        .into_iter()
        .filter(|(name, _, _)| !name.is_empty())
        .filter_map(|(name, whole, text)| {
            let (min, max) = stated_range(&text)?;
            Some(NumericOption {
                name,
                min,
                max,
                whole,
            })
        })
        .collect()
}

/// One test per lesson for `$check`, run on the lesson's binary and then on
/// each of its examples (found in `crates/<lesson>/examples/`), so a new
/// example is covered without being listed.
#[macro_export]
macro_rules! per_lesson {
    ($check:ident: $($lesson:ident),* $(,)?) => {
        mod $check {
            $( #[test] fn $lesson() {
                for program in $crate::programs(stringify!($lesson)) {
                    super::$check(&program)
                }
            } )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_from_clap_help() {
        let help = "Options:\n      --workers <N>  Children to start (1-64) [default: 3]\n      --window <X>\n          Seconds the parent waits, scaled by the pace\n          (0-600) [default: 10]\n      --pace <X>     Scale the pauses (0-100) [env: LESSON_PACE=] [default: 1]\n      --quick        Fast (no range here: 1-2)\n  -h, --help         Print help\n";
        let opts = numeric_options(help);
        assert_eq!(opts.len(), 3, "{opts:?}");
        assert_eq!(
            opts[0],
            NumericOption {
                name: "--workers".into(),
                min: 1.0,
                max: 64.0,
                whole: true
            }
        );
        assert_eq!(
            (opts[1].min, opts[1].max, opts[1].whole),
            (0.0, 600.0, false)
        );
        assert_eq!(opts[2].name, "--pace");
        assert!(!opts[2].whole);
    }

    #[test]
    fn reads_ranges_from_the_old_help() {
        let help = "Options:\n  --workers N        children (1-64, default 3)\n  --pace X           scale (0-100, default 1); env LESSON_PACE\n  --quick            fast\n";
        let opts = numeric_options(help);
        assert_eq!(opts.len(), 2);
        assert_eq!((opts[0].min, opts[0].max, opts[0].whole), (1.0, 64.0, true));
        assert_eq!(opts[1].name, "--pace");
    }
}
