//! The shell scripts: shellcheck-clean, and each one runs and sees what it
//! says it shows (the scripts exit non-zero when they do not).

use std::path::{Path, PathBuf};
use std::process::Command;

use course_tests::{bin_dir, repo_root, LESSONS};
use testkit::{run_command, Outcome};

fn scripts() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo_root().join("scripts"))
        .expect("scripts/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    found.sort();
    found
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{tool} is required under CI"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

/// Run a script the way a reader would, at a fast pace, using the binaries
/// this test run built (no nested cargo build).
fn run_script(script: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(args)
        .current_dir(repo_root())
        .env("LESSON_BIN_DIR", bin_dir())
        .env("LESSON_PACE", "0.1");
    run_command(cmd)
}

#[test]
fn scripts_are_shellcheck_clean() {
    if !have("shellcheck") {
        return;
    }
    let mut files = scripts();
    files.push(repo_root().join(".ci/run"));
    let o = Command::new("shellcheck")
        .args(&files)
        .output()
        .expect("shellcheck");
    assert!(
        o.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn every_script_has_a_header_and_strict_mode() {
    for s in scripts() {
        let text = std::fs::read_to_string(&s).expect("read");
        assert!(text.starts_with("#!/usr/bin/env bash\n"), "{}", s.display());
        assert!(
            text.contains("# Description:") && text.contains("# Usage:"),
            "{}",
            s.display()
        );
        assert!(text.contains("set -euo pipefail"), "{}", s.display());
    }
}

/// The tools a script needs beyond bash and procps.
fn tools_for(script: &str) -> &'static [&'static str] {
    match script {
        "prefork_server.sh" => &["ss"],
        "debugging.sh" => &["strace", "gdb"],
        "orphan.sh" | "process_pool.sh" | "supervisor.sh" => &["pstree"],
        _ => &[],
    }
}

#[test]
fn lesson_scripts_see_what_they_show() {
    if !have("ps") {
        return;
    }
    for s in scripts() {
        let name = s.file_name().expect("name").to_string_lossy().into_owned();
        // The walkthrough has its own test; stress and bench run the
        // lessons again at length (CI runs stress.sh itself); lib.sh is sourced by the others, not run;
        // repeat-tests runs cargo test, which would wait on this run's build lock.
        if [
            "walkthrough.sh",
            "stress.sh",
            "bench.sh",
            "lib.sh",
            "repeat-tests.sh",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        if !tools_for(&name).iter().all(|t| have(t)) {
            continue;
        }
        let o = run_script(&s, &[]);
        assert!(o.status.success(), "{name} failed: {o:?}");
    }
}

#[test]
fn walkthrough_runs_every_lesson_and_example() {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/walkthrough.sh"))
        .args(["--examples", "0"])
        .current_dir(repo_root())
        .env("LESSON_BIN_DIR", bin_dir());
    let o = run_command(cmd);
    assert!(o.status.success(), "walkthrough failed: {o:?}");
    for (name, _) in LESSONS {
        assert!(
            o.stdout.contains(&format!("  {name} ====")),
            "walkthrough ran {name}"
        );
        for example in course_tests::examples(name) {
            assert!(
                o.stdout.contains(&format!("---- example {example} (")),
                "walkthrough ran {example}"
            );
        }
    }
    assert!(
        o.stdout
            .contains(&format!("all {} lessons ran", LESSONS.len())),
        "{}",
        o.stdout
    );
}
