//! Opening files found in a cache or a folder: regular files only, and never blocking. A FIFO
//! named `adapter_model.safetensors`, `adapter_config.json` or `refs/main` would block `open`
//! (and then `read`) forever; a device would stream without end. [`read_capped`] also bounds
//! what is read, for files whose size has a limit (the Hub header cache's entries).

use crate::error::{Error, Result};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::Read;
use std::path::Path;

/// Opens `path` (following symlinks) for reading if it is a regular file; anything else is an
/// [`Error::Io`] saying what it is.
pub fn open_regular(path: &Path) -> Result<File> {
    let md = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    check(path, &md)?;
    let mut opts = OpenOptions::new();
    opts.read(true);
    // Non-blocking, so that a file swapped for a FIFO after the check cannot block the open;
    // the flag changes nothing for reads of a regular file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| Error::io(path, e))?;
    check(path, &f.metadata().map_err(|e| Error::io(path, e))?)?;
    Ok(f)
}

/// The whole content of a regular file (see [`open_regular`]).
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut f = open_regular(path)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// The whole content of a regular file of at most `max` bytes (see [`open_regular`]): a larger
/// file is refused before anything is read, and one that grows meanwhile is read no further.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = open_regular(path)?;
    let too_large = || {
        let msg = format!("larger than the {max} bytes it may have");
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
        )
    };
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > max {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(too_large());
    }
    Ok(buf)
}

fn check(path: &Path, md: &Metadata) -> Result<()> {
    if md.is_file() {
        return Ok(());
    }
    let what = kind(md);
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ),
    ))
}

fn kind(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "a special file"
}
