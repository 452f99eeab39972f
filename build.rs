//! Records what `--version` prints besides the crate version: the target triple (`EAE_TARGET`)
//! and the git commit the binary was built from (`EAE_GIT_COMMIT`).
//!
//! The commit is the short hash of HEAD, with `-dirty` when the binary's inputs (`src/`,
//! `build.rs`, `Cargo.toml`, `Cargo.lock`) differ from it (staged or not), or `unknown` without
//! git (a source tarball, a container build that copies no `.git`). Setting `EAE_GIT_COMMIT` in
//! the build's environment overrides it (e.g. `--build-arg` in a container build). Only a
//! repository whose top level is this crate's directory counts: a tarball unpacked inside some
//! other repository is not that repository's commit.
//!
//! Rule: rerun only when the answer can change, because a rerun recompiles the whole crate (lib
//! and bin). Cargo reruns a build script that prints `rerun-if-changed` lines only when one of the
//! named paths changes, so this script names HEAD (checkout), HEAD's reflog (every commit, reset
//! or checkout in this work tree, also when the branch's ref is packed and its loose file does not
//! exist yet), the branch's loose ref and packed-refs, and the binary's inputs (an edit that makes
//! them dirty reruns it; cargo recompiles the crate for that edit anyway). Not the index: `git
//! status` and editors rewrite it all the time, and a staged change is already an edited input.
//! Dirty is judged on those inputs alone so that it always agrees with what reruns the script: an
//! edit to the README neither reruns it nor makes a binary dirty.
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the binary is built from (relative to the crate's directory).
const INPUTS: [&str; 4] = ["src", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EAE_TARGET={target}");

    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", dir.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=EAE_GIT_COMMIT");
    let commit = match std::env::var("EAE_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => git_commit(&dir),
    };
    println!("cargo:rustc-env=EAE_GIT_COMMIT={commit}");
}

/// `<short hash>[-dirty]` of the repository rooted at `dir`, or `unknown`.
fn git_commit(dir: &Path) -> String {
    if own_repository(dir).is_none() {
        return "unknown".into();
    }
    for path in watched_git_paths(dir) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let Some(hash) = git(dir, &["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into(); // a repository without a commit yet
    };
    // --no-optional-locks: status must not refresh (rewrite) the index it is watched by, or every
    // build would rerun this script. Untracked files do not make a build dirty.
    let mut status = vec![
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
    ];
    status.extend(INPUTS);
    match git(dir, &status) {
        Some(changes) if changes.is_empty() => hash,
        _ => format!("{hash}-dirty"), // changes, or cannot tell: never claim a clean build
    }
}

/// The top level of the git work tree when it is `dir` (and git runs), else None.
fn own_repository(dir: &Path) -> Option<PathBuf> {
    let top = Path::new(&git(dir, &["rev-parse", "--show-toplevel"])?)
        .canonicalize()
        .ok()?;
    (top == dir.canonicalize().ok()?).then_some(top)
}

/// HEAD, its reflog, the ref it points to (loose) and packed-refs: those that exist (a missing
/// path would make cargo rerun the script on every build). Worktrees keep HEAD and its reflog in
/// their own git dir and refs in the common one: `--git-path` resolves each.
fn watched_git_paths(dir: &Path) -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_string(), "logs/HEAD".into(), "packed-refs".into()];
    if let Some(reference) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        names.push(reference); // e.g. refs/heads/main; absent on a detached HEAD
    }
    names
        .iter()
        .filter_map(|name| git(dir, &["rev-parse", "--git-path", name]))
        .map(|path| dir.join(path)) // relative paths are relative to `dir`; absolute ones stay
        .filter(|path| path.exists())
        .collect()
}

/// Trimmed stdout of a successful `git -C dir ARGS`, or None.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_string())
}
