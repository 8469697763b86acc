//! The local backend through the storage interface, on real files.

use std::path::Path;

use bytes::BytesMut;
use ferry_config::OnConflict;
use ferry_proto::names::{RelPath, SafeName};

use super::{OpenError, TRASH_PREFIX, WORK_DIR};
use crate::storage::numbered::numbered;
use crate::storage::{Origin, Storage, StorageError, Stored};

fn name(s: &str) -> SafeName {
    SafeName::component(s).unwrap()
}

/// The sender of the tests' uploads.
const ME: Origin = Origin::Sender(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));
/// A classmate.
const OTHER: Origin = Origin::Sender(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3)));

async fn put(storage: &Storage, n: &str, data: &[u8]) -> Result<Stored, StorageError> {
    put_from(storage, n, data, ME).await
}

async fn put_from(
    storage: &Storage,
    n: &str,
    data: &[u8],
    from: Origin,
) -> Result<Stored, StorageError> {
    let mut up = storage
        .begin_write(name(n), data.len() as u64, from)
        .await?;
    up.write(data).await?;
    up.commit(Some(ferry_proto::crc::checksum(data))).await
}

async fn origin_of(s: &Storage, n: &str) -> Origin {
    s.open_read(&RelPath::parse(n, 1024).unwrap())
        .await
        .unwrap()
        .origin()
}

fn visible(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".ferry"))
        .collect();
    v.sort();
    v
}

/// Waits (bounded) until the reaper has emptied the work area and
/// removed every trash directory.
async fn reaped(root: &Path) {
    for _ in 0..500 {
        let work_empty = std::fs::read_dir(root.join(WORK_DIR))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        let trash = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(TRASH_PREFIX));
        if work_empty && !trash {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the reaper did not finish");
}

#[test]
fn numbered_names() {
    assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
    assert_eq!(numbered("a.tar.gz", 2), "a (2).tar.gz");
    assert_eq!(numbered(".bashrc", 3), ".bashrc (3)");
    assert_eq!(numbered("Makefile", 4), "Makefile (4)");
    let long = format!("{}.pdf", "é".repeat(125));
    let n = numbered(&long, 12);
    assert!(n.len() <= 255 && n.ends_with(" (12).pdf"), "{n}");
    let n = numbered(&format!("a.{}", "x".repeat(253)), 3);
    assert!(n.len() <= 255 && n.ends_with(" (3)"), "{n}");
}

#[tokio::test]
async fn rename_policy_keeps_both_and_dedups_retries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    assert_eq!(put(&s, "r.pdf", b"one").await.unwrap().name, "r.pdf");
    assert_eq!(put(&s, "r.pdf", b"two").await.unwrap().name, "r (1).pdf");
    let again = put(&s, "r.pdf", b"two").await.unwrap();
    assert_eq!(
        (again.name.as_str(), again.deduplicated),
        ("r (1).pdf", true)
    );
    assert_eq!(visible(dir.path()), ["r (1).pdf", "r.pdf"]);
    assert_eq!(std::fs::read(dir.path().join("r.pdf")).unwrap(), b"one");
    assert!(std::fs::read_dir(dir.path().join(WORK_DIR))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test]
async fn identical_uploads_committing_at_once_store_one_copy() {
    // Regression: the identity check ran only before the rename, so two
    // identical uploads racing for a name could both be stored.
    for _ in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
        let data = vec![5u8; 100_000];
        let (a, b) = tokio::join!(put(&s, "same.bin", &data), put(&s, "same.bin", &data));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.name.as_str(), b.name.as_str()), ("same.bin", "same.bin"));
        assert!(a.deduplicated != b.deduplicated);
        assert_eq!(visible(dir.path()), ["same.bin"]);
    }
}

#[tokio::test]
async fn reject_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Reject).unwrap();
    put(&s, "a", b"1").await.unwrap();
    assert!(matches!(
        put(&s, "a", b"2").await,
        Err(StorageError::Exists(_))
    ));
    assert!(put(&s, "a", b"1").await.unwrap().deduplicated);
    drop(s);
    let s = Storage::open_local(dir.path(), OnConflict::Overwrite).unwrap();
    put(&s, "a", b"3").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"3");
    // Overwrite never swaps a file for a directory tree (the sender's own).
    let mut t = s.begin_tree(name("tree"), 4, ME).await.unwrap();
    let keep = RelPath::parse("keep", 64).unwrap();
    let mut up = t.begin_file(&keep, 1, 10, 1000).await.unwrap();
    up.write(b"k").await.unwrap();
    up.commit(None).await.unwrap();
    t.commit().await.unwrap();
    assert!(put(&s, "tree", b"file").await.is_err());
    assert_eq!(std::fs::read(dir.path().join("tree/keep")).unwrap(), b"k");
}

#[tokio::test]
async fn each_file_keeps_its_sender_and_no_sender_replaces_anothers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Overwrite).unwrap();
    assert!(s.records_origins());
    put(&s, "a", b"mine").await.unwrap();
    assert_eq!(origin_of(&s, "a").await, ME);
    // The same bytes under the same name from a classmate: not a retry of
    // mine, and not a replacement of it either.
    let theirs = put_from(&s, "a", b"mine", OTHER).await.unwrap();
    assert_eq!(
        (theirs.name.as_str(), theirs.deduplicated),
        ("a (1)", false)
    );
    assert_eq!(origin_of(&s, "a (1)").await, OTHER);
    let again = put_from(&s, "a", b"theirs", OTHER).await.unwrap();
    assert_eq!(again.name, "a (1)", "overwrite replaces the sender's own");
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"mine");
    assert_eq!(std::fs::read(dir.path().join("a (1)")).unwrap(), b"theirs");
    // A retry is found where its sender's upload went, whatever numbers
    // others took since (before: stored again under the next number).
    for k in 0..5u8 {
        let o = Origin::Sender(std::net::IpAddr::from([127, 0, 1, k]));
        put_from(&s, "lab.py", &[k], o).await.unwrap();
    }
    let retry = put_from(&s, "a", b"theirs", OTHER).await.unwrap();
    assert_eq!((retry.name.as_str(), retry.deduplicated), ("a (1)", true));
    let first = Origin::Sender(std::net::IpAddr::from([127, 0, 1, 0]));
    let retry = put_from(&s, "lab.py", &[0], first).await.unwrap();
    assert_eq!((retry.name.as_str(), retry.deduplicated), ("lab.py", true));
    let third = Origin::Sender(std::net::IpAddr::from([127, 0, 1, 2]));
    let retry = put_from(&s, "lab.py", &[2], third).await.unwrap();
    assert_eq!(
        (retry.name.as_str(), retry.deduplicated),
        ("lab (2).py", true)
    );
    // An admin's file is placed; an upload of its name never replaces it.
    std::fs::write(dir.path().join("handout.txt"), b"admin").unwrap();
    assert_eq!(origin_of(&s, "handout.txt").await, Origin::Placed);
    assert_eq!(
        put(&s, "handout.txt", b"x").await.unwrap().name,
        "handout (1).txt"
    );
    assert_eq!(
        std::fs::read(dir.path().join("handout.txt")).unwrap(),
        b"admin"
    );
    // A file with no sender on record: put there by an admin, unless a
    // ferryd from before senders were recorded received it (it kept a
    // BLAKE3 digest beside it): then it is no one's to take.
    rustix::fs::removexattr(dir.path().join("a"), "user.ferry.from").unwrap();
    assert_eq!(origin_of(&s, "a").await, Origin::Placed);
    rustix::fs::setxattr(
        dir.path().join("a"),
        "user.ferry.blake3",
        &[7u8; 52],
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(origin_of(&s, "a").await, Origin::Unrecorded);
}

#[tokio::test]
async fn failed_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    s.start_reaper();
    let mut up = s.begin_write(name("x"), 4, ME).await.unwrap();
    up.write(b"ab").await.unwrap();
    assert!(matches!(
        up.write(b"cde").await,
        Err(StorageError::SizeMismatch { .. })
    ));
    drop(up);
    assert!(put(&s, "y", b"").await.is_ok());
    let mut up = s.begin_write(name("z"), 2, ME).await.unwrap();
    up.write(b"ab").await.unwrap();
    assert!(matches!(
        up.commit(Some(7)).await,
        Err(StorageError::ChecksumMismatch { .. })
    ));
    assert_eq!(visible(dir.path()), ["y"]);
    reaped(dir.path()).await;
}

/// Large uploads go through a writer thread (a lane): stored byte for byte,
/// an identical retry deduplicated (the bytes compared), a
/// wrong CRC or a short upload leaves nothing, and more than the lanes at
/// once write in line, equally right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_through_writer_threads_keep_every_guarantee() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    s.start_reaper();
    let size = super::upload::PIPE_MIN as usize + 12_345;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let owned = |up: &mut crate::storage::Upload, data: &[u8]| {
        assert!(up.large_reads(), "a large upload gets a lane");
        data.chunks(256 * 1024)
            .map(bytes::Bytes::copy_from_slice)
            .collect::<Vec<_>>()
    };
    let mut up = s
        .begin_write(name("big.bin"), size as u64, ME)
        .await
        .unwrap();
    for piece in owned(&mut up, &data) {
        up.write_owned(piece).await.unwrap();
    }
    let crc = ferry_proto::crc::checksum(&data);
    assert_eq!(up.crc(), crc);
    let stored = up.commit(Some(crc)).await.unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.deduplicated),
        ("big.bin", false)
    );
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), data);
    let again = put(&s, "big.bin", &data).await.unwrap();
    assert_eq!((again.name.as_str(), again.deduplicated), ("big.bin", true));
    // A wrong CRC, and an upload cut short: nothing of either.
    let mut up = s
        .begin_write(name("bad.bin"), size as u64, ME)
        .await
        .unwrap();
    for piece in owned(&mut up, &data) {
        up.write_owned(piece).await.unwrap();
    }
    assert!(matches!(
        up.commit(Some(crc ^ 1)).await,
        Err(StorageError::ChecksumMismatch { .. })
    ));
    let mut up = s
        .begin_write(name("cut.bin"), size as u64, ME)
        .await
        .unwrap();
    up.write_owned(bytes::Bytes::from(data[..1000].to_vec()))
        .await
        .unwrap();
    drop(up);
    // Six at once over four lanes: two write in line; all six stored right.
    let many = (0..6).map(|i| {
        let s = s.clone();
        let mut mine = data.clone();
        mine[0] = i;
        async move {
            let n = format!("m{i}.bin");
            let mut up = s
                .begin_write(name(&n), mine.len() as u64, ME)
                .await
                .unwrap();
            for piece in mine.chunks(100_000) {
                up.write_owned(bytes::Bytes::copy_from_slice(piece))
                    .await
                    .unwrap();
            }
            up.commit(Some(ferry_proto::crc::checksum(&mine)))
                .await
                .unwrap();
            (n, mine)
        }
    });
    for (n, mine) in futures_join_all(many).await {
        assert_eq!(std::fs::read(dir.path().join(&n)).unwrap(), mine, "{n}");
    }
    let mut names = visible(dir.path());
    names.retain(|n| !n.starts_with('m'));
    assert_eq!(names, ["big.bin"]);
    reaped(dir.path()).await;
}

/// `join_all` without a dependency: each future on a task of its own.
async fn futures_join_all<T: Send + 'static>(
    futs: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn leftovers_are_cleaned_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(WORK_DIR).join("tree-1/a")).unwrap();
    std::fs::write(dir.path().join(WORK_DIR).join("upload-1-1"), b"partial").unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    // Set aside at once (the work area is fresh), removed once the reaper runs.
    assert!(std::fs::read_dir(dir.path().join(WORK_DIR))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(visible(dir.path()), Vec::<String>::new());
    s.start_reaper();
    reaped(dir.path()).await;
}

#[tokio::test]
async fn numbered_names_never_run_out_and_need_no_probing() {
    let dir = tempfile::tempdir().unwrap();
    // 5,000 numbered copies an earlier run (or a squatter) left behind.
    std::fs::write(dir.path().join("lab1.py"), b"0").unwrap();
    for k in 1..=5000 {
        std::fs::write(dir.path().join(numbered("lab1.py", k)), b"").unwrap();
    }
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    assert_eq!(
        put(&s, "lab1.py", b"new").await.unwrap().name,
        "lab1 (5001).py"
    );
    assert_eq!(
        put(&s, "lab1.py", b"newer").await.unwrap().name,
        "lab1 (5002).py"
    );
    // A retry of the last one is still found identical.
    let again = put(&s, "lab1.py", b"newer").await.unwrap();
    assert_eq!(
        (again.name.as_str(), again.deduplicated),
        ("lab1 (5002).py", true)
    );
}

#[tokio::test]
async fn one_storage_per_root() {
    let dir = tempfile::tempdir().unwrap();
    let first = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    let upload = first.begin_write(name("a"), 1, ME).await.unwrap();
    match Storage::open_local(dir.path(), OnConflict::Rename) {
        Err(OpenError::Locked { holder }) => assert_eq!(holder, Some(std::process::id())),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second storage on the same root opened"),
    }
    // The second open touched nothing: the first's upload is intact.
    assert_eq!(
        std::fs::read_dir(dir.path().join(WORK_DIR))
            .unwrap()
            .count(),
        1
    );
    drop(upload);
    drop(first);
    Storage::open_local(dir.path(), OnConflict::Rename).expect("free once the first is gone");
}

#[tokio::test]
async fn reads_refuse_symlinks_and_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
    let p = |s: &str| RelPath::parse(s, 1024).unwrap();
    assert!(matches!(
        s.open_read(&p("link")).await,
        Err(StorageError::NotRegular(_))
    ));
    assert!(matches!(
        s.open_read(&p("dirlink/secret")).await,
        Err(StorageError::NotRegular(_))
    ));
    assert!(matches!(
        s.read_tree(&p("dirlink"), 10, 32).await,
        Err(StorageError::NotRegular(_))
    ));
    assert!(matches!(
        s.open_read(&p("missing")).await,
        Err(StorageError::NotFound(_))
    ));
    put(&s, "f", b"data").await.unwrap();
    assert!(matches!(
        s.open_read(&p("f/x")).await,
        Err(StorageError::NotFound(_))
    ));
    let mut d = s.open_read(&p("f")).await.unwrap();
    assert_eq!(d.size(), 4);
    let mut buf = BytesMut::new();
    d.read_chunk(&mut buf, 3).await.unwrap();
    assert_eq!(&buf[..], b"dat");
}

#[tokio::test]
async fn trees_appear_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    let p = |s: &str| RelPath::parse(s, 1024).unwrap();
    let mut t = s.begin_tree(name("proj"), 32, ME).await.unwrap();
    for (path, data) in [
        ("a.txt", &b"A"[..]),
        ("src/main.rs", b"fn main(){}"),
        ("src/x/y", b""),
    ] {
        let mut up = t
            .begin_file(&p(path), data.len() as u64, 10, 1000)
            .await
            .unwrap();
        up.write(data).await.unwrap();
        up.commit(None).await.unwrap();
    }
    assert!(matches!(
        t.begin_file(&p("a.txt"), 0, 10, 1000).await,
        Err(StorageError::BadTree(_))
    ));
    assert!(matches!(
        t.begin_file(&p("a.txt/z"), 0, 10, 1000).await,
        Err(StorageError::BadTree(_))
    ));
    assert_eq!(visible(dir.path()), Vec::<String>::new());
    let stored = t.commit().await.unwrap();
    assert_eq!(stored.name, "proj");
    let mut reader = s.read_tree(&p("proj"), 10, 32).await.unwrap();
    let mut names = Vec::new();
    while let Some((rel, _)) = reader.next().await.unwrap() {
        names.push(rel.to_string());
    }
    assert_eq!(names, ["a.txt", "src/main.rs", "src/x/y"]);
    // The tree, its directories and its files all say who sent them.
    for dir in ["proj", "proj/src", "proj/src/x"] {
        assert_eq!(s.read_tree(&p(dir), 10, 32).await.unwrap().origin(), ME);
    }
    assert_eq!(origin_of(&s, "proj/src/x/y").await, ME);
    // 3 files and 2 directories: 5 entries.
    let mut reader = s.read_tree(&p("proj"), 4, 32).await.unwrap();
    let mut over = None;
    for _ in 0..6 {
        if let Err(e) = reader.next().await {
            over = Some(e);
            break;
        }
    }
    assert!(matches!(over, Some(StorageError::BadTree(_))));
    // A second tree of the same name is renamed; an abandoned one vanishes.
    let t = s.begin_tree(name("proj"), 32, ME).await.unwrap();
    assert_eq!(t.commit().await.unwrap().name, "proj (1)");
    let mut t = s.begin_tree(name("gone"), 32, ME).await.unwrap();
    t.begin_file(&p("f"), 1, 10, 1000).await.unwrap();
    drop(t);
    assert_eq!(visible(dir.path()), ["proj", "proj (1)"]);
    s.start_reaper();
    reaped(dir.path()).await;
}

/// A retry is judged by its bytes: the same sender, name, size and CRC-32
/// with other bytes (five XORed bytes forge that) is stored beside the
/// first, small or large (a writer lane); the true retry is deduplicated;
/// a stored file an admin rewrote in place (same size, new mtime) is never
/// taken for a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_judged_by_its_bytes_not_its_crc() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open_local(dir.path(), OnConflict::Rename).unwrap();
    s.start_reaper();
    let forge = |data: &[u8]| {
        let mut out = data.to_vec();
        for (i, b) in [0x41u8, 0x06, 0x71, 0xDB, 0x01].iter().enumerate() {
            out[100 + i] ^= b;
        }
        assert_eq!(
            ferry_proto::crc::checksum(&out),
            ferry_proto::crc::checksum(data)
        );
        out
    };
    for size in [5000usize, super::upload::PIPE_MIN as usize + 777] {
        let n = format!("f{size}.bin");
        let honest: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
        let forged = forge(&honest);
        let first = put(&s, &n, &forged).await.unwrap();
        assert_eq!(
            (first.name.as_str(), first.deduplicated),
            (n.as_str(), false)
        );
        let second = put(&s, &n, &honest).await.unwrap();
        let numbered = format!("f{size} (1).bin");
        assert_eq!(
            (second.name.as_str(), second.deduplicated),
            (numbered.as_str(), false),
            "same size and CRC, other bytes: not a retry"
        );
        let retry = put(&s, &n, &honest).await.unwrap();
        assert_eq!(
            (retry.name.as_str(), retry.deduplicated),
            (numbered.as_str(), true)
        );
        assert_eq!(std::fs::read(dir.path().join(&n)).unwrap(), forged);
        assert_eq!(std::fs::read(dir.path().join(&numbered)).unwrap(), honest);
    }
    // An admin rewrites a stored file in place with the same bytes: its
    // CRC record no longer matches its mtime, so an upload is stored anew.
    let data = b"print('lab 1')\n".to_vec();
    put(&s, "lab.py", &data).await.unwrap();
    std::fs::write(dir.path().join("lab.py"), &data).unwrap();
    let edited = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("lab.py"))
        .unwrap()
        .set_modified(edited)
        .unwrap();
    let again = put(&s, "lab.py", &data).await.unwrap();
    assert_eq!(
        (again.name.as_str(), again.deduplicated),
        ("lab (1).py", false)
    );
}
