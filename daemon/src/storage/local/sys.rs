//! The raw system calls of the local backend: renames that refuse to
//! replace or that exchange, directory fds, no-follow opens, fsyncs, the
//! root's lock and extended attributes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use ferry_proto::names::SafeName;
use rustix::fs::{FileType, Mode, OFlags, RenameFlags, XattrFlags, CWD};
use tokio::fs::File;

use super::{OpenError, LOCK_FILE};

/// `rename` that fails with `AlreadyExists` instead of replacing (Linux `renameat2`).
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        CWD,
        from,
        CWD,
        to,
        RenameFlags::NOREPLACE,
    )?)
}

/// Swaps `a` and `b` atomically, whatever they are (`RENAME_EXCHANGE`).
pub(super) fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        CWD,
        a,
        CWD,
        b,
        RenameFlags::EXCHANGE,
    )?)
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

const NO_FOLLOW: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory at `path`, never following a final link.
pub(super) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        NO_FOLLOW | OFlags::DIRECTORY,
        Mode::empty(),
    )?)
}

/// Opens the regular file at `path` to read, never following a final link
/// (non-blocking, so a FIFO put there meanwhile cannot hang the open).
pub(super) fn open_file(path: &Path) -> io::Result<std::fs::File> {
    let fd = rustix::fs::open(path, NO_FOLLOW | OFlags::NONBLOCK, Mode::empty())?;
    Ok(std::fs::File::from(fd))
}

/// Starts writing `len` bytes of `file` from `offset` to the disk, without
/// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); best effort,
/// the fsync that follows reports any error.
pub(super) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on an open descriptor the caller holds.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// What [`open_at`] opens.
#[derive(Clone, Copy)]
pub(super) enum At {
    /// A directory.
    Dir,
    /// A file; non-blocking, so a FIFO put there meanwhile cannot hang the open.
    File,
}

/// Opens `name` in the directory `dir`, never following a link.
pub(super) fn open_at(dir: &OwnedFd, name: &str, what: At) -> io::Result<OwnedFd> {
    let flags = match what {
        At::Dir => NO_FOLLOW | OFlags::DIRECTORY,
        At::File => NO_FOLLOW | OFlags::NONBLOCK,
    };
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// The entries of an open directory, sorted: (name, is a directory). Links,
/// special files and names the normaliser refuses are skipped (and logged).
/// Read from the fd itself: the directory it holds, whatever it is called now.
pub(super) fn list_dir(dir: &OwnedFd, label: &str) -> io::Result<Vec<(SafeName, bool)>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let Some(name) = std::str::from_utf8(raw)
            .ok()
            .and_then(|n| SafeName::component(n).ok())
        else {
            tracing::warn!(tree = label, name = %String::from_utf8_lossy(raw), "skipping an entry whose name cannot be sent");
            continue;
        };
        // The entry itself, not followed (d_type, or a stat where it is unknown).
        let ft = match entry.file_type() {
            FileType::Unknown => FileType::from_raw_mode(
                rustix::fs::statat(
                    dir,
                    entry.file_name(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )?
                .st_mode,
            ),
            known => known,
        };
        match ft {
            FileType::Directory => out.push((name, true)),
            FileType::RegularFile => out.push((name, false)),
            _ => tracing::warn!(tree = label, name = %name, "skipping a symlink or special file"),
        }
    }
    out.sort();
    Ok(out)
}

/// Sets the extended attribute `name` on an open file.
pub(super) fn set_xattr(file: &impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(
        file,
        name,
        value,
        XattrFlags::empty(),
    )?)
}

/// The extended attribute `name` of an open file, if it is exactly `N` bytes.
pub(super) fn xattr<const N: usize>(file: &impl AsFd, name: &str) -> Option<[u8; N]> {
    let mut v = [0u8; N];
    match rustix::fs::fgetxattr(file, name, &mut v[..]) {
        Ok(n) if n == N => Some(v),
        _ => None,
    }
}

/// The extended attribute `name` of the entry at `path` (a link is not
/// followed), if it is exactly `N` bytes.
pub(super) fn xattr_at<const N: usize>(path: &Path, name: &str) -> Option<[u8; N]> {
    let mut v = [0u8; N];
    match rustix::fs::lgetxattr(path, name, &mut v[..]) {
        Ok(n) if n == N => Some(v),
        _ => None,
    }
}

/// Takes the root's exclusive lock (`flock`, released when the process
/// ends, however it ends) and writes this pid into the lock file.
pub(in crate::storage) fn lock_root(root: &Path) -> Result<std::fs::File, OpenError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(root.join(LOCK_FILE))?;
    let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
    if let Err(e) = locked {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(OpenError::Locked {
                holder: text.trim().parse().ok(),
            });
        }
        return Err(io::Error::from(e).into());
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
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32);
    opts.open(path).await
}
