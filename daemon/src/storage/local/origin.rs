//! Who stored a file, kept in the extended attribute `user.ferry.from` of
//! the file (and of a tree's directory), written before the data is made
//! durable and placed, so a file is never visible without it.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::io::Errno;

use super::upload::DIGEST_XATTR;
use crate::storage::origin::MAX_RECORD;
use crate::storage::Origin;

/// The attribute.
const ORIGIN_XATTR: &str = "user.ferry.from";

/// A file system with no user extended attributes.
fn unsupported(e: Errno) -> bool {
    e == Errno::OPNOTSUPP
}

/// Records `from` on an open file or directory. A failure is the upload's
/// failure (the file is not stored), except on a file system with no user
/// attributes at all, where ferryd runs only with `access.downloads =
/// "anyone"` (checked at start, [`supports_origins`]).
pub(super) fn set_origin(file: &impl AsFd, from: Origin) -> io::Result<()> {
    let Some(record) = from.record() else {
        return Ok(());
    };
    match rustix::fs::fsetxattr(
        file,
        ORIGIN_XATTR,
        record.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    ) {
        Err(e) if unsupported(e) => Ok(()),
        r => Ok(r?),
    }
}

/// Records `from` on a received tree's directory and every directory in
/// it (its files have theirs already), so any part of it asked for says
/// whose it is.
pub(super) fn set_origin_dirs(dir: &Path, from: Origin) -> io::Result<()> {
    set_origin(&super::sys::open_dir(dir)?, from)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_origin_dirs(&entry.path(), from)?;
        }
    }
    Ok(())
}

/// Who stored the file open as `file`.
pub(super) fn origin_of(file: &impl AsFd) -> Origin {
    read(|name, buf| rustix::fs::fgetxattr(file, name, buf))
}

/// Who stored the entry at `path` (a link is not followed); `None` when
/// there is no entry.
pub(super) fn origin_at(path: &Path) -> Option<Origin> {
    std::fs::symlink_metadata(path).ok()?;
    Some(read(|name, buf| rustix::fs::lgetxattr(path, name, buf)))
}

/// With no record: a file with ferry's digest was received (by a ferryd
/// from before senders were recorded); one without was put there by an
/// admin. An unreadable record is never taken as "placed" (which would
/// publish it).
fn read(get: impl Fn(&str, &mut [u8]) -> rustix::io::Result<usize>) -> Origin {
    let mut v = [0u8; MAX_RECORD];
    match get(ORIGIN_XATTR, &mut v) {
        Ok(n) => Origin::parse(&v[..n]),
        Err(Errno::NODATA) => match get(DIGEST_XATTR, &mut []) {
            Ok(_) => Origin::Unrecorded,
            Err(e) if e == Errno::NODATA || unsupported(e) => Origin::Placed,
            Err(_) => Origin::Unrecorded,
        },
        Err(e) if unsupported(e) => Origin::Placed,
        Err(_) => Origin::Unrecorded,
    }
}

/// Whether the file system of `dir` keeps user extended attributes
/// (probed with a file of its own, removed after).
pub(super) fn supports_origins(dir: &Path) -> bool {
    let probe = dir.join(format!("origin-probe-{}", std::process::id()));
    let ok = std::fs::File::create(&probe).is_ok_and(|f| {
        rustix::fs::fsetxattr(&f, ORIGIN_XATTR, b"probe", rustix::fs::XattrFlags::empty()).is_ok()
    });
    let _ = std::fs::remove_file(&probe);
    ok
}
