//! Every lesson, run from outside: it passes its own checks at full speed,
//! names the process on every line, leaves nothing behind, answers `--help`,
//! and refuses every bad option value with exit 2 and a short message naming it.

use course_tests::{lesson_bin, numeric_options, per_lesson, quick_args, repo_root, LESSONS};
use testkit::{assert_nothing_left, assert_rejected, run, speaker};

fn runs_and_proves_its_claims(name: &str) {
    let o = run(lesson_bin(name), quick_args(name));
    o.assert_success();
    assert!(
        o.stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("all checks passed")),
        "{name} should end with its verdict:\n{}",
        o.stdout
    );
    for line in o.stdout.lines().chain(o.stderr.lines()) {
        let Some((role, pid)) = speaker(line) else {
            panic!("{name}: a line that does not name its process: {line:?}");
        };
        assert!(!role.is_empty() && pid > 0, "{name}: {line:?}");
    }
    assert_nothing_left(name, o.pid);
}

fn help_and_every_bad_value(name: &str) {
    let bin = lesson_bin(name);
    let help = run(&bin, &["--help"]);
    assert_eq!(help.code(), Some(0), "{name} --help: {help:?}");
    let options = numeric_options(&help.stdout);
    assert!(
        options.iter().any(|o| o.name == "--pace"),
        "{name} --help shows --pace:\n{}",
        help.stdout
    );
    for opt in &options {
        // The range --help states is the one the parser applies: both ends
        // accepted (checked before --help is acted on), one step past refused.
        for end in [opt.min, opt.max] {
            let o = run(&bin, &[&opt.name, &end.to_string(), "--help"]);
            assert_eq!(
                o.code(),
                Some(0),
                "{name} {} {end} is accepted: {o:?}",
                opt.name
            );
        }
        let beyond = if opt.whole {
            format!("{}", opt.max as u64 + 1)
        } else {
            format!("{}", opt.max * 10.0 + 1.0)
        };
        let mut bad = vec!["abc".to_string(), "-5".to_string(), beyond, String::new()];
        if opt.min > 0.0 {
            bad.push(if opt.whole {
                format!("{}", opt.min as u64 - 1)
            } else {
                "0".to_string()
            });
        }
        if opt.whole {
            bad.push("1.5".to_string());
        }
        for value in bad {
            assert_rejected(&bin, &[&opt.name, &value], &opt.name);
        }
    }
    assert_rejected(&bin, &["--no-such-option"], "--no-such-option");
    let env = std::process::Command::new(&bin)
        .env("LESSON_PACE", "soon")
        .output()
        .expect("run");
    assert_eq!(
        env.status.code(),
        Some(2),
        "{name}: a bad LESSON_PACE is refused"
    );
    assert!(String::from_utf8_lossy(&env.stderr).contains("LESSON_PACE"));
}

per_lesson!(runs_and_proves_its_claims: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);
per_lesson!(help_and_every_bad_value: basic_process, multiple_processes, zombie, orphan, pipe_communication, queue_communication, shared_value, shared_array, manager, process_lock, process_semaphore, process_barrier, deadlock, process_pool, performance, signals, named_pipe, exec, supervisor, prefork_server);

#[test]
fn every_crate_is_listed() {
    let mut crates: Vec<String> = std::fs::read_dir(repo_root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    crates.sort();
    let mut listed: Vec<String> = LESSONS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        crates, listed,
        "tests/support/lib.rs LESSONS must list every crate in crates/"
    );
}

#[test]
fn every_lesson_is_in_the_readme_and_the_walkthrough() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let walk =
        std::fs::read_to_string(repo_root().join("scripts/walkthrough.sh")).expect("walkthrough");
    for (name, _) in LESSONS {
        assert!(
            readme.contains(&format!("-p {name}`")),
            "README has no row for {name}"
        );
        assert!(
            walk.contains(&format!("\"{name}|")),
            "walkthrough.sh does not run {name}"
        );
    }
}

#[test]
fn lesson_manifests_copy_out() {
    for (name, _) in LESSONS {
        let manifest =
            std::fs::read_to_string(repo_root().join(format!("crates/{name}/Cargo.toml")))
                .expect("manifest");
        assert!(
            !manifest.contains("workspace = true"),
            "{name} inherits from the workspace"
        );
        assert!(
            manifest.contains("common = { path = \"../../common\" }"),
            "{name} finds common beside it"
        );
        assert!(manifest.contains("publish = false"), "{name}");
    }
}
