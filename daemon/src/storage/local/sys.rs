//! The raw system calls of the local backend: renames that refuse to
//! replace or that exchange, directory fds, no-follow opens, fsyncs, the
//! root's lock and extended attributes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ferry_proto::names::SafeName;
use tokio::fs::File;

use super::{OpenError, LOCK_FILE};

pub(super) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `rename` that fails with `AlreadyExists` instead of replacing (Linux `renameat2`).
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(from, to, libc::RENAME_NOREPLACE)
}

pub(super) fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (cpath(from)?, cpath(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

pub(super) fn fsync_dirs(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_dirs(&entry.path())?;
        }
    }
    fsync_dir(dir)
}

pub(super) fn open_dir(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path; the fd returned is ours to own.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` in the directory `dir`, never following a link.
pub(super) fn open_at(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    flags: libc::c_int,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The entries of an open directory, sorted: (name, is a directory). Links,
/// special files and names the normaliser refuses are skipped (and logged).
pub(super) fn list_dir(
    dir: &std::os::fd::OwnedFd,
    label: &str,
) -> io::Result<Vec<(SafeName, bool)>> {
    use std::os::fd::AsRawFd;
    // The directory the fd holds, whatever it is called now.
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let entry = entry?;
        let ft = entry.file_type()?; // the entry itself, not followed
        let raw = entry.file_name();
        let Some(name) = raw.to_str().and_then(|n| SafeName::component(n).ok()) else {
            tracing::warn!(tree = label, name = ?raw, "skipping an entry whose name cannot be sent");
            continue;
        };
        if ft.is_dir() || ft.is_file() {
            out.push((name, ft.is_dir()));
        } else {
            tracing::warn!(tree = label, name = %name, "skipping a symlink or special file");
        }
    }
    out.sort();
    Ok(out)
}

/// Takes the root's exclusive lock (`flock`, released when the process
/// ends, however it ends) and writes this pid into the lock file.
pub(super) fn lock_root(root: &Path) -> Result<std::fs::File, OpenError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(root.join(LOCK_FILE))?;
    // SAFETY: a valid open fd for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(OpenError::Locked {
                holder: text.trim().parse().ok(),
            });
        }
        return Err(e.into());
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(file)
}

/// Opens `path` for reading, never following a final symlink.
pub(super) async fn open_nofollow(path: &Path) -> io::Result<File> {
    let mut opts = tokio::fs::OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    opts.open(path).await
}
