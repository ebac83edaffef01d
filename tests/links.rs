//! Every link in README.md and in each crate's README.md leads somewhere:
//! a relative link names a file or folder of this repository, and a link
//! into the seed repository names a file of its list (tests/data/seed-files.txt,
//! a copy of ../shared/seed/upstream-files.txt) at the list's commit.
//! No network is needed.

use std::path::{Path, PathBuf};

use course_tests::repo_root;

const SEED: &str = "https://github.com/djeada/Parallel-And-Concurrent-Programming/";

/// The commit on the list's first line, and the paths after it.
fn seed_list() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(repo_root().join("tests/data/seed-files.txt"))
        .expect("tests/data/seed-files.txt");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let commit = lines
        .next()
        .expect("a commit on the first line")
        .to_string();
    (commit, lines.map(String::from).collect())
}

/// The targets of the Markdown links `[text](target)` and `[ref]: target` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or(after.len());
            found.push(after[..end].to_string());
            rest = &after[end..];
        }
        let t = line.trim_start();
        if t.starts_with('[') {
            if let Some((_, target)) = t.split_once("]: ") {
                found.push(target.trim().to_string());
            }
        }
    }
    found
}

fn readmes() -> Vec<PathBuf> {
    let mut files = vec![repo_root().join("README.md")];
    for entry in std::fs::read_dir(repo_root().join("crates")).expect("crates/") {
        let readme = entry.expect("entry").path().join("README.md");
        if readme.is_file() {
            files.push(readme);
        }
    }
    files
}

/// What is wrong with the links of one README.
fn faults(readme: &Path, text: &str, commit: &str, paths: &[String]) -> Vec<String> {
    let mut wrong = Vec::new();
    for link in links(text) {
        let target = link.split('#').next().unwrap_or_default();
        if let Some(rest) = target.strip_prefix(SEED) {
            let ok = rest
                .strip_prefix("blob/")
                .or_else(|| rest.strip_prefix("tree/"))
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(c, path)| c == commit && paths.iter().any(|p| p == path));
            // The repository's own front page is fine too.
            if !ok && !rest.is_empty() {
                wrong.push(format!(
                    "{}: {link} (not at {commit}, or not in the list)",
                    readme.display()
                ));
            }
        } else if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        } else {
            let dir = readme.parent().expect("folder");
            if !dir.join(target).exists() {
                wrong.push(format!("{}: {link} (no such file)", readme.display()));
            }
        }
    }
    wrong
}

#[test]
fn every_link_leads_somewhere() {
    let (commit, paths) = seed_list();
    assert_eq!(commit.len(), 40, "a full commit hash: {commit}");
    let mut wrong = Vec::new();
    for readme in readmes() {
        let text = std::fs::read_to_string(&readme).expect("README");
        wrong.extend(faults(&readme, &text, &commit, &paths));
    }
    assert!(wrong.is_empty(), "broken links:\n{}", wrong.join("\n"));
}

#[test]
fn the_link_check_can_fail() {
    let (commit, paths) = seed_list();
    let readme = repo_root().join("README.md");
    let bad = format!(
        "[a]({SEED}blob/master/src/cpp/multiprocessing/01_basic_process.cpp)\n\
         [b]({SEED}blob/{commit}/src/cpp/multiprocessing/no_such.cpp)\n\
         [c](crates/no_such/src/main.rs)\n\
         [d]: scripts/no_such.sh\n"
    );
    assert_eq!(faults(&readme, &bad, &commit, &paths).len(), 4);
    let good = format!(
        "[a]({SEED}blob/{commit}/src/cpp/multiprocessing/zombie_process.cpp)\n\
         [b](crates/zombie/src/main.rs) [c](scripts/zombie.sh#L1)\n\
         [d]: https://docs.rs/clap\n"
    );
    assert_eq!(
        faults(&readme, &good, &commit, &paths),
        Vec::<String>::new()
    );
}

/// The vendored list is the seed notes' list, where a checkout has them.
#[test]
fn the_vendored_list_matches_the_seed_notes() {
    let upstream = repo_root().join("../shared/seed/upstream-files.txt");
    let Ok(text) = std::fs::read_to_string(&upstream) else {
        eprintln!("SKIPPED: no {} in this checkout", upstream.display());
        return;
    };
    let (commit, paths) = seed_list();
    assert!(
        text.lines().next().is_some_and(|l| l.contains(&commit)),
        "commit {commit}"
    );
    let theirs: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        theirs,
        paths,
        "tests/data/seed-files.txt is a copy of {}",
        upstream.display()
    );
}
