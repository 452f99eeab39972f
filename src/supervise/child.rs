//! Starting the command: into its [`Guardian`]'s process group, with a `vfork`-style clone.
//!
//! Rules:
//! - The command starts in the guardian's group (the foreground group of the terminal, when we own
//!   one), with `PR_SET_PDEATHSIG=SIGKILL`, the dispositions the wrapper inherited, an empty signal
//!   mask, and its environment prepared in the parent. Its path is resolved in the parent, so a wrong
//!   PATH entry costs no failed `execve` in the child.
//! - Between clone and exec the child runs on its own stack in our memory (`CLONE_VM|CLONE_VFORK`,
//!   as posix_spawn does; the parent thread waits meanwhile) and calls only raw system calls. It
//!   does not exec when it cannot join the guardian's group, or when a leave signal has arrived.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::exit;
use super::guardian::{errno, Guardian};
use super::signals;

/// The PATH searched when the environment has none (musl's and glibc's default).
const DEFAULT_PATH: &str = "/usr/local/bin:/bin:/usr/bin";
/// Stack of the cloned child until it execs.
const CHILD_STACK: usize = 64 * 1024;

/// Everything the cloned child needs, prepared in the parent (the child must not allocate).
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// What the cloned child reads and writes, in the parent's memory.
#[repr(C)]
struct Shared {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    group: libc::pid_t,
    parent: libc::pid_t,
    dispositions: [(i32, bool); signals::CHANGED.len()],
    /// errno of the failed step, 0 when `execve` succeeded.
    errno: libc::c_int,
    /// Which step failed.
    failed: Step,
}

/// The cloned child's steps that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
enum Step {
    Exec,
    DeathSignal,
    Group,
    /// A leave signal arrived before the exec (not a failure: the command must not start).
    Leave,
}

/// Why the command was not started.
#[derive(Debug)]
pub(super) enum SpawnError {
    /// It cannot run: the exit code for that (127 not found, 126 not executable) and why.
    Failed(i32, io::Error),
    /// A leave signal arrived first.
    Left(i32),
}

/// Starts `command` in `guardian`'s group with `env` changes; returns its pid.
pub(super) fn spawn(
    command: &[OsString],
    set: &[(&str, String)],
    remove: &[&str],
    guardian: &Guardian,
) -> Result<i32, SpawnError> {
    let failed = |(code, error)| SpawnError::Failed(code, error);
    let prepared = prepare(command, set, remove).map_err(failed)?;
    let argv: Vec<*const libc::c_char> = pointers(&prepared.argv);
    let envp: Vec<*const libc::c_char> = pointers(&prepared.envp);
    take_terminal(guardian.group());
    let mut shared = Shared {
        path: prepared.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        group: guardian.group(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        dispositions: signals::inherited(),
        errno: 0,
        failed: Step::Exec,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down: hand over its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // SAFETY: `exec_child` runs on `stack` with `shared`, both alive until clone returns: with
    // CLONE_VFORK this thread is suspended until the child has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            exec_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut shared as *mut Shared).cast(),
        )
    };
    if pid < 0 {
        return Err(failed((exit::CANNOT_EXECUTE, io::Error::last_os_error())));
    }
    if shared.errno == 0 {
        return Ok(pid);
    }
    let error = io::Error::from_raw_os_error(shared.errno);
    Err(match shared.failed {
        Step::Leave => SpawnError::Left(signals::leave_requested().unwrap_or(libc::SIGTERM)),
        Step::Exec => failed((code_for(&error), error)),
        Step::DeathSignal => failed((exit::CANNOT_EXECUTE, context("set its death signal", error))),
        Step::Group => failed((
            exit::CANNOT_EXECUTE,
            context("join its guardian's group", error),
        )),
    })
}

fn context(step: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("cannot {step}: {error}"))
}

/// Replaces this process with `command` (disabled mode: nothing else runs yet). Returns only when
/// the command cannot run, with the exit code for that (127 not found, 126 not executable).
pub(super) fn exec(command: &[OsString]) -> (i32, io::Error) {
    let prepared = match prepare(command, &[], &[]) {
        Ok(prepared) => prepared,
        Err(failure) => return failure,
    };
    let argv = pointers(&prepared.argv);
    let envp = pointers(&prepared.envp);
    // SAFETY: the Rust runtime ignores SIGPIPE; the command gets the default back, as std's
    // Command does. path, argv and envp are NUL-terminated C strings and NULL-terminated arrays
    // that live until execve returns (it returns only on failure).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(prepared.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    let error = io::Error::last_os_error();
    (code_for(&error), error)
}

/// The cloned child: signals, group, death signal, exec. Raw system calls only.
extern "C" fn exec_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Shared`, alive and unused by the parent until we exec or exit.
    unsafe {
        let shared = &mut *(arg as *mut Shared);
        let fail = |shared: &mut Shared, step: Step, errno: libc::c_int| -> ! {
            shared.failed = step;
            shared.errno = errno;
            libc::_exit(exit::CANNOT_EXECUTE)
        };
        for (signal, ignored) in shared.dispositions {
            let disposition = if ignored {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            libc::signal(signal, disposition);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
            || libc::getppid() != shared.parent
        {
            fail(shared, Step::DeathSignal, libc::ECHILD);
        }
        if libc::setpgid(0, shared.group) != 0 {
            fail(shared, Step::Group, errno());
        }
        // A plain atomic load (our memory is the parent's): a leave signal that arrived during
        // the spawn stops it here, before the command exists.
        if signals::leave_requested().is_some() {
            fail(shared, Step::Leave, libc::ECANCELED);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(shared.path, shared.argv, shared.envp);
        shared.errno = errno();
        libc::_exit(exit::NOT_FOUND)
    }
}

/// Makes `group` the terminal's foreground group when stdin is our controlling terminal and we
/// are in its foreground now (a wrapper started in the background must not steal it).
fn take_terminal(group: i32) {
    // SAFETY: isatty/tcgetpgrp/getpgrp/tcsetpgrp take plain integers. SIGTTOU is ignored by the
    // wrapper, so tcsetpgrp cannot stop us.
    unsafe {
        if libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
        {
            libc::tcsetpgrp(libc::STDIN_FILENO, group);
        }
    }
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Resolves the program and builds argv and envp.
fn prepare(
    command: &[OsString],
    set: &[(&str, String)],
    remove: &[&str],
) -> Result<Prepared, (i32, io::Error)> {
    let Some(program) = command.first() else {
        return Err((exit::USAGE, io::Error::other("no command")));
    };
    let path_var = std::env::var_os("PATH");
    let path = resolve(program, path_var.as_deref()).map_err(|e| (code_for(&e), e))?;
    let cstring = |bytes: Vec<u8>| {
        CString::new(bytes).map_err(|_| {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command");
            (exit::CANNOT_EXECUTE, error)
        })
    };
    let path = cstring(path.into_os_string().into_vec())?;
    let argv = command
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = environment(std::env::vars_os(), set, remove)
        .into_iter()
        .map(cstring)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared { path, argv, envp })
}

/// The command's environment: ours without `remove` and the names of `set`, plus `set`.
fn environment(
    ours: impl Iterator<Item = (OsString, OsString)>,
    set: &[(&str, String)],
    remove: &[&str],
) -> Vec<Vec<u8>> {
    let dropped = |name: &OsStr| {
        remove.iter().any(|r| name == OsStr::new(r))
            || set.iter().any(|(n, _)| name == OsStr::new(n))
    };
    let mut env: Vec<Vec<u8>> = ours
        .filter(|(name, _)| !dropped(name))
        .map(|(name, value)| [name.as_bytes(), b"=", value.as_bytes()].concat())
        .collect();
    env.extend(
        set.iter()
            .map(|(name, value)| format!("{name}={value}").into_bytes()),
    );
    env
}

/// Finds `program` as `execvp` would: as given when it holds a `/`, else in each PATH entry.
fn resolve(program: &OsStr, path: Option<&OsStr>) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = None;
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(true) => return Ok(candidate),
            Ok(false) => denied = Some(candidate),
            Err(_) => continue,
        }
    }
    match denied {
        // As execvp: a match that is not executable is "permission denied", tried last.
        Some(candidate) => Ok(candidate),
        None => Err(io::Error::new(io::ErrorKind::NotFound, "not found in PATH")),
    }
}

/// Whether `path` is a file we may execute (`Err` when it does not exist).
fn executable(path: &Path) -> io::Result<bool> {
    let metadata = std::fs::metadata(path)?;
    Ok(metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// 127 for a command that is not there, 126 for one that cannot be executed.
fn code_for(error: &io::Error) -> i32 {
    match error.kind() {
        io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_resolved_like_execvp() {
        let path = OsStr::new("/nonexistent:/usr/bin:/bin");
        let sh = resolve(OsStr::new("sh"), Some(path)).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{sh:?}");
        assert_eq!(
            resolve(OsStr::new("./x"), Some(path)).unwrap(),
            PathBuf::from("./x")
        );
        let missing = resolve(OsStr::new("no-such-program-eae"), Some(path)).unwrap_err();
        assert_eq!(code_for(&missing), exit::NOT_FOUND);
        // A directory of that name is no match.
        let tmp = std::env::temp_dir();
        let not = resolve(OsStr::new("."), Some(tmp.as_os_str()));
        assert!(not.is_err() || not.unwrap().is_dir());
    }

    #[test]
    fn the_environment_drops_secrets_and_replaces_what_is_set() {
        let ours = vec![
            (OsString::from("PATH"), OsString::from("/bin")),
            (
                OsString::from("ETCD_AWAIT_ELECTION_PASSWORD"),
                OsString::from("s3cret"),
            ),
            (
                OsString::from("ETCD_AWAIT_ELECTION_LEADER_KEY"),
                OsString::from("stale"),
            ),
        ];
        let env = environment(
            ours.into_iter(),
            &[("ETCD_AWAIT_ELECTION_LEADER_KEY", "l/1".into())],
            &["ETCD_AWAIT_ELECTION_PASSWORD"],
        );
        let text: Vec<String> = env
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        assert_eq!(text, ["PATH=/bin", "ETCD_AWAIT_ELECTION_LEADER_KEY=l/1"]);
    }
}
