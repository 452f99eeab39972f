//! Reading small files named by the user (TLS material, secrets) without trusting the path: a
//! wrong path must fail fast with a reason instead of hanging start-up or filling memory. A FIFO
//! would block a plain open or read, a device could be endless (`/dev/zero`), a directory has no
//! content — so the kind is checked before and after an `O_NONBLOCK` open, and the read is bounded.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Reads `path`, a regular file of at most `max` bytes (symbolic links are followed).
///
/// # Errors
///
/// What is wrong with the file ("it is a FIFO", "it has 5000000 bytes"), never its content.
pub fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    check_kind(
        &fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?,
        max,
    )?;
    // O_NONBLOCK: should the path have become a FIFO since the check, open and read return at
    // once instead of waiting for a writer. O_NOCTTY: a terminal never becomes ours.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    check_kind(
        &file
            .metadata()
            .map_err(|e| format!("cannot read it: {e}"))?,
        max,
    )?;
    read_bounded(file, max)
}

/// A regular file no larger than `max`.
fn check_kind(metadata: &Metadata, max: u64) -> Result<(), String> {
    let kind = metadata.file_type();
    let problem = if kind.is_dir() {
        "it is a directory"
    } else if kind.is_fifo() {
        "it is a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "it is a device"
    } else if kind.is_socket() {
        "it is a socket"
    } else if !kind.is_file() {
        "it is not a regular file"
    } else if metadata.len() > max {
        return Err(format!(
            "it has {} bytes, more than the {max} accepted",
            metadata.len()
        ));
    } else {
        return Ok(());
    };
    Err(problem.to_owned())
}

/// Reads at most one byte more than `max`, so a file that grew after the check is refused.
fn read_bounded(file: File, max: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("it has more than the {max} bytes accepted"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_directories_and_big_files_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("eae-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        unsafe { libc::mkfifo(path.as_ptr(), 0o600) };
        let big = dir.join("big");
        fs::write(&big, vec![b'x'; 11]).unwrap();
        let ok = dir.join("ok");
        fs::write(&ok, b"0123456789").unwrap();
        for (path, problem) in [
            (Path::new("/dev/zero"), "device"),
            (fifo.as_path(), "FIFO"),
            (dir.as_path(), "directory"),
            (big.as_path(), "11 bytes"),
            (Path::new("/nonexistent/x"), "cannot read"),
        ] {
            let error = read_small_file(path, 10).unwrap_err();
            assert!(error.contains(problem), "{path:?}: {error}");
        }
        assert_eq!(read_small_file(&ok, 10).unwrap(), b"0123456789");
        let _ = fs::remove_dir_all(&dir);
    }
}
