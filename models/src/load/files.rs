//! Reading model files as untrusted input: regular files only, opened read-only and without
//! blocking, each kind with a size cap proportional to what it can legitimately be.
//!
//! A `config.json` symlinked to `/dev/zero` would otherwise be read until memory runs out, and a
//! FIFO named `config.json` would block the open forever: [`open_regular`] opens with
//! `O_NONBLOCK` (so a FIFO cannot block) and refuses anything but a regular file;
//! [`read_text`] reads at most the cap of its [`FileKind`] and refuses a larger file before
//! reading it.
//!
//! ```
//! use mlx_models::load::files::{read_text, FileKind};
//! use mlx_models::Error;
//! let err = read_text(std::path::Path::new("/dev/zero"), FileKind::Config).unwrap_err();
//! assert!(matches!(err, Error::NotRegularFile { .. }));
//! ```

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The kinds of small files a checkpoint holds, each with its size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `config.json`, `generation_config.json`: 4 MiB (real ones are a few KB; multimodal
    /// configs with long `layer_types` lists stay under 100 KB).
    Config,
    /// `tokenizer.json` (also `tekken.json` and SentencePiece `tokenizer.model`): 256 MiB
    /// (Gemma 3's tokenizer.json is 33 MB).
    Tokenizer,
    /// `tokenizer_config.json`: 64 MiB (its `added_tokens_decoder` can list 256k entries).
    TokenizerConfig,
    /// `chat_template.jinja` (or a template file given by a caller): 4 MiB (real templates are
    /// under 20 KB).
    ChatTemplate,
}

impl FileKind {
    /// The size cap in bytes.
    pub fn limit(self) -> u64 {
        match self {
            FileKind::Config | FileKind::ChatTemplate => 4 << 20,
            FileKind::Tokenizer => 256 << 20,
            FileKind::TokenizerConfig => 64 << 20,
        }
    }
}

/// Opens `path` read-only, following symlinks, and succeeds only for a regular file.
///
/// Errors: [`Error::Io`] when it cannot be opened; [`Error::NotRegularFile`] for a FIFO, a
/// device, a socket or a folder (the open does not block on a FIFO).
pub fn open_regular(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer appears; O_NONBLOCK returns at once
        // (and the fstat below refuses it). It has no effect on regular files' reads.
        options.custom_flags(nonblock_flag());
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// `O_NONBLOCK` of the platform.
#[cfg(unix)]
fn nonblock_flag() -> i32 {
    libc::O_NONBLOCK
}

/// Reads a small text file of `kind`: a regular file of at most `kind.limit()` bytes, valid
/// UTF-8.
///
/// Errors: as [`open_regular`], [`Error::FileTooLarge`] (checked before reading, and again
/// while reading in case the file grows), [`Error::Io`] for invalid UTF-8.
pub fn read_text(path: &Path, kind: FileKind) -> Result<String> {
    read_text_capped(path, kind.limit())
}

/// [`read_text`] for a file that may be absent: `Ok(None)` when it does not exist.
pub fn read_optional_text(path: &Path, kind: FileKind) -> Result<Option<String>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_text(path, kind).map(Some),
    }
}

/// [`read_text`] with an explicit cap in bytes.
pub fn read_text_capped(path: &Path, limit: u64) -> Result<String> {
    let bytes = read_bytes_capped(path, limit)?;
    String::from_utf8(bytes).map_err(|_| Error::io(path, "the file is not valid UTF-8"))
}

/// Reads a small binary file of `kind` (a SentencePiece `tokenizer.model`): a regular file of
/// at most `kind.limit()` bytes. Errors: as [`read_text`], without the UTF-8 check.
///
/// ```
/// use mlx_models::load::files::{read_bytes, FileKind};
/// let path = std::env::temp_dir().join(format!("read-bytes-doc-{}", std::process::id()));
/// std::fs::write(&path, [0xff, 0x00]).unwrap();
/// assert_eq!(read_bytes(&path, FileKind::Tokenizer).unwrap(), vec![0xff, 0x00]);
/// // A folder is not a regular file.
/// assert!(read_bytes(&std::env::temp_dir(), FileKind::Tokenizer).is_err());
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_bytes(path: &Path, kind: FileKind) -> Result<Vec<u8>> {
    read_bytes_capped(path, kind.limit())
}

/// [`read_bytes`] with an explicit cap in bytes.
pub fn read_bytes_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let too_large = |size| Error::FileTooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A model file opened once, read-only and only if regular, whose header was read through
/// it; tensor data is then read through the same handle with positioned reads, so the file
/// cannot be swapped for another between the header check and the data reads.
#[derive(Debug, Clone)]
pub struct OpenedFile {
    path: PathBuf,
    file: Arc<File>,
}

impl OpenedFile {
    /// Opens `path` with [`open_regular`].
    pub fn open(path: &Path) -> Result<OpenedFile> {
        Ok(OpenedFile {
            path: path.to_path_buf(),
            file: Arc::new(open_regular(path)?),
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes now.
    pub fn byte_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len())
    }

    /// A reader from its first byte (the handle's own position is not used elsewhere).
    pub fn reader(&self) -> &File {
        &self.file
    }

    /// [`read_range`] on this file.
    pub fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        read_range(&self.file, &self.path, offset, len)
    }
}

/// Reads exactly `len` bytes at `offset` of `file` with positioned reads (the file position is
/// not used, so one handle may serve several readers).
///
/// Errors: [`Error::Io`] naming `path` when the range is not in the file.
pub fn read_range(file: &File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let n = usize::try_from(len).map_err(|_| Error::io(path, "a data range exceeds memory"))?;
    let mut buf = vec![0u8; n];
    read_exact_at(file, &mut buf, offset).map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mlx_models_files_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Model files are opened read-only: a read-write open fails on read-only files for
    /// non-root users and mounts (MLX's GGUF reader did that), and a loader has no business
    /// writing.
    #[test]
    fn files_are_opened_read_only() {
        use std::os::fd::AsRawFd;
        let p = temp("ro.bin");
        std::fs::write(&p, b"x").unwrap();
        let file = open_regular(&p).unwrap();
        // SAFETY: F_GETFL on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn caps_and_regular_files() {
        let p = temp("small.json");
        std::fs::write(&p, "{\"a\": 1}").unwrap();
        assert_eq!(read_text(&p, FileKind::Config).unwrap(), "{\"a\": 1}");
        assert!(matches!(
            read_text_capped(&p, 3),
            Err(Error::FileTooLarge {
                size: 8,
                limit: 3,
                ..
            })
        ));
        assert!(matches!(
            read_text(&std::env::temp_dir(), FileKind::Config),
            Err(Error::NotRegularFile { .. })
        ));
        let f = open_regular(&p).unwrap();
        assert_eq!(read_range(&f, &p, 2, 3).unwrap(), b"a\":");
        assert!(matches!(read_range(&f, &p, 6, 3), Err(Error::Io { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_does_not_block() {
        let p = temp("fifo.json");
        let _ = std::fs::remove_file(&p);
        let status = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(
            read_text(&p, FileKind::Config),
            Err(Error::NotRegularFile { .. })
        ));
        std::fs::remove_file(&p).unwrap();
    }
}
