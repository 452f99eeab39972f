//! Reading a secret from a file (`USERNAME_FILE`, `PASSWORD_FILE`), so that a Kubernetes Secret
//! mounted as a volume works without putting the secret in the environment. The only file I/O of
//! the configuration; a misconfigured path fails fast (see [`crate::files`]).

use std::path::Path;

/// The largest secret file accepted: far above any password or user name, small enough that a
/// wrong path (a log file, an image) is refused instead of read into memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads the secret in `path`: one trailing `\n` or `\r\n` is dropped, the rest must be non-empty
/// UTF-8. Symbolic links are followed (Kubernetes mounts secrets as links).
///
/// # Errors
///
/// What is wrong with the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_small_file(path, MAX_SECRET_FILE_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| "it is not valid UTF-8")?;
    let secret = strip_one_newline(&text);
    if secret.is_empty() {
        return Err("it is empty".to_owned());
    }
    Ok(secret.to_owned())
}

/// Editors and `echo` end a file with a newline that is not part of the secret; only one is
/// dropped, so a secret that itself ends in a newline can still be given (with two).
fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::Scratch;

    #[test]
    fn content_with_one_trailing_newline_dropped() {
        let dir = Scratch::new("secret-content");
        for (content, expected) in [
            ("pw", "pw"),
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            ("p w \t", "p w \t"),
            ("\npw", "\npw"),
            ("pässwörd\n", "pässwörd"),
        ] {
            let path = dir.file("s", content.as_bytes());
            assert_eq!(
                read_secret_file(&path).as_deref(),
                Ok(expected),
                "{content:?}"
            );
        }
    }

    #[test]
    fn refusals_never_show_the_content() {
        let dir = Scratch::new("secret-refusals");
        let limit = usize::try_from(MAX_SECRET_FILE_BYTES).expect("small");
        let at_limit = dir.file("at-limit", &vec![b'a'; limit]);
        assert_eq!(read_secret_file(&at_limit).map(|s| s.len()), Ok(limit));
        let cases: &[(&str, &[u8], &str)] = &[
            ("empty", b"", "empty"),
            ("newline", b"\n", "empty"),
            ("crlf", b"\r\n", "empty"),
            ("latin1", b"SECRET\xe9", "UTF-8"),
            ("big", &vec![b'S'; limit + 1], "bytes"),
        ];
        for (name, content, problem) in cases {
            let path = dir.file(name, content);
            let err = read_secret_file(&path).expect_err(name);
            assert!(err.contains(problem), "{name}: {err}");
            assert!(!err.contains('S'), "{name}: {err}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = Scratch::new("secret-kinds");
        let fifo = dir.path("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        for (path, problem) in [
            (fifo, "FIFO"),
            (dir.path(""), "directory"),
            ("/dev/null".into(), "device"),
            (dir.path("missing"), "cannot read it"),
        ] {
            let err = read_secret_file(&path).expect_err("refused");
            assert!(err.contains(problem), "{}: {err}", path.display());
        }
    }

    #[test]
    fn follows_symbolic_links() {
        let dir = Scratch::new("secret-link");
        let target = dir.file("target", b"pw\n");
        let link = dir.path("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_eq!(read_secret_file(&link).as_deref(), Ok("pw"));
    }
}
