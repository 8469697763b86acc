//! The cluster suite (issue 14): two ferryd instances over one distributed
//! store on loopback — a 3-node Garage cluster (replication 3) for the
//! bytes, a 3-member etcd cluster for the names — started by
//! `tests/cluster/cluster.sh`.
//!
//! Needs `garage` and `etcd`/`etcdctl` (and `curl`), and a built ferryd;
//! `.ci/run` installs them and runs
//! `cargo test -p ferry-tests --test cluster -- --ignored --test-threads=1`.
//! The tests are `#[ignore]`d so `cargo test --workspace` stays
//! self-contained; run without the cluster tools they fail, they do not skip.
//! The cluster uses fixed ports, so the tests take turns (a lock).

mod support;

use std::path::Path;
use std::time::Duration;

use ferry::{GetVia, NoProgress, SendVia};
use ferry_tests::{assert_same_bytes, data, handout};
use support::{eventually, Cluster, Ferryd};
use tokio::sync::Mutex;

/// One test at a time: the cluster's ports are fixed.
static TURN: Mutex<()> = Mutex::const_new(());

/// A cluster and two instances, A and B.
fn two_instances(extra: &str) -> (Cluster, Ferryd, Ferryd) {
    let cluster = Cluster::up();
    let a = Ferryd::start(&cluster, &cluster.dir.path().join("a"), extra);
    let b = Ferryd::start(&cluster, &cluster.dir.path().join("b"), extra);
    (cluster, a, b)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Downloads `name` from `from` by every download protocol and checks the bytes.
async fn get_everywhere(from: &Ferryd, name: &str, want: &[u8], local: &Path) {
    let c = from.client();
    for (via, tag) in [
        (GetVia::Signal, "raf"),
        (GetVia::Magic, "magic"),
        (GetVia::Udp, "udp"),
    ] {
        let out = local.join(format!("{tag}-{name}"));
        c.get(via, name, &out, true, &NoProgress)
            .await
            .unwrap_or_else(|e| panic!("{name} by {tag}: {e}"));
        assert_same_bytes(
            &std::fs::read(&out).unwrap(),
            want,
            &format!("{name} by {tag}"),
        );
    }
    // The handouts' own clients, byte for byte on the wire.
    let reply = handout::magic_download(from.addr("magic_download"), name.as_bytes(), false).await;
    let (status, len, body) = handout::parse_magic(&reply);
    assert_eq!(
        (status, len as usize),
        (1, want.len()),
        "{name}: handout magic header"
    );
    assert_same_bytes(body, want, &format!("{name} by the handout's magic client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn all_six_protocols_across_two_instances() {
    let _turn = TURN.lock().await;
    let (_cluster, a, b) = two_instances("");
    let local = tempfile::tempdir().unwrap();
    // Below one part, above it (multipart), and empty.
    for (i, size) in [0usize, 1000, 20 * 1024 * 1024 + 7].into_iter().enumerate() {
        let bytes = data::bytes(size, 40 + i as u64);
        for (via, tag) in [
            (SendVia::Signal, "saf"),
            (SendVia::Tcp, "tcp"),
            (SendVia::Udp, "udp"),
        ] {
            let (up, down) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let name = format!("{tag}-{size}.bin");
            let path = write(local.path(), &name, &bytes);
            let sent = up
                .client()
                .send(via, &path, None, &NoProgress)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(sent.crc, ferry_proto::crc::checksum(&bytes));
            get_everywhere(down, &name, &bytes, local.path()).await;
        }
    }
    // The handout's tcp_upload client on B, read back on A.
    let bytes = data::bytes(300_000, 7);
    assert_eq!(
        handout::tcp_upload(b.addr("tcp_upload"), "handout.bin", &bytes).await,
        b"go ahead"
    );
    eventually(10, "handout.bin stored", || {
        !_cluster.etcd_keys("ferry/n/handout.bin").is_empty()
    });
    get_everywhere(&a, "handout.bin", &bytes, local.path()).await;
    // A tree by SAR on A, by RAR on B.
    let tree = local.path().join("lab");
    let files = [
        ("a.txt", 10usize),
        ("sub/b.bin", 9 * 1024 * 1024),
        ("sub/deeper/c", 0),
    ];
    for (i, (p, n)) in files.iter().enumerate() {
        write(&tree, p, &data::bytes(*n, 70 + i as u64));
    }
    let sent = a.client().send_dir(&tree, None, &NoProgress).await.unwrap();
    assert_eq!(sent.stored_as.as_deref(), Some("lab"));
    let back = local.path().join("lab-back");
    let got = b
        .client()
        .get_dir("lab", &back, false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(got.files, 3);
    for (i, (p, n)) in files.iter().enumerate() {
        assert_same_bytes(
            &std::fs::read(back.join(p)).unwrap(),
            &data::bytes(*n, 70 + i as u64),
            p,
        );
    }
    // A file inside the tree, through the other instance's RAF.
    let inner = local.path().join("inner");
    b.client()
        .get(GetVia::Signal, "lab/sub/b.bin", &inner, false, &NoProgress)
        .await
        .unwrap();
    assert_same_bytes(
        &std::fs::read(&inner).unwrap(),
        &data::bytes(9 * 1024 * 1024, 71),
        "lab/sub/b.bin",
    );
    // udp_sum and PIN on both.
    for d in [&a, &b] {
        let (server, n) = d.client().sum("student", 5).await.unwrap();
        assert_eq!((server.as_str(), n), ("Server of ferry", 42));
        d.client().ping().await.unwrap();
    }
    // Every object is named: nothing left behind by the uploads.
    let named = _cluster.etcd_keys("ferry/n/").len();
    assert_eq!(named, 11, "{:?}", _cluster.etcd_keys("ferry/n/"));
    assert!(
        _cluster.etcd_keys("ferry/p/").is_empty(),
        "no pending uploads left"
    );
    assert_eq!(_cluster.objects().len(), 9 + 1 + 3, "one object per file");
    assert_eq!(_cluster.open_multipart_uploads(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn fifty_clients_upload_one_name_through_both_instances_at_once() {
    let _turn = TURN.lock().await;
    let (cluster, a, b) = two_instances("");
    let local = tempfile::tempdir().unwrap();
    // Ten different contents, each sent by five clients: 50 uploads of
    // "same.bin", half through each instance, all at once.
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let content = data::bytes(50_000 + (i % 10) as usize, i % 10);
        let path = write(local.path(), &format!("c{i}/same.bin"), &content);
        let client = if i % 2 == 0 { a.client() } else { b.client() };
        tasks.push(tokio::spawn(async move {
            let sent = client.send(SendVia::Signal, &path, None, &NoProgress).await;
            (i % 10, content, sent)
        }));
    }
    let mut stored: std::collections::BTreeMap<String, u64> = Default::default();
    for t in tasks {
        let (which, content, sent) = t.await.unwrap();
        let name = sent
            .unwrap_or_else(|e| panic!("upload of content {which}: {e}"))
            .stored_as
            .unwrap();
        if let Some(prev) = stored.insert(name.clone(), which) {
            assert_eq!(
                prev, which,
                "{name} was acknowledged for two different contents"
            );
        }
        // Every acknowledged file is there, whole, through the other instance too.
        for d in [&a, &b] {
            let out = local.path().join(format!("back-{which}"));
            d.client()
                .get(GetVia::Signal, &name, &out, true, &NoProgress)
                .await
                .unwrap();
            assert_same_bytes(&std::fs::read(&out).unwrap(), &content, &name);
        }
    }
    // Identical ones deduplicated, different ones under distinct names.
    assert_eq!(stored.len(), 10, "{stored:?}");
    assert!(stored.contains_key("same.bin"));
    assert_eq!(cluster.etcd_keys("ferry/n/").len(), 10);
    assert_eq!(
        cluster.objects().len(),
        10,
        "duplicates' objects are removed"
    );
    assert!(cluster.etcd_keys("ferry/p/").is_empty());
}

/// An upload under way: its name, its bytes, and how it ends.
type InFlight = tokio::task::JoinHandle<(String, Vec<u8>, Result<ferry::Sent, ferry::Error>)>;

/// Uploads of `size` through `d`, `n` at once, named `<tag>-<i>.bin`.
fn uploads(d: &Ferryd, local: &Path, tag: &str, n: usize, size: usize) -> Vec<InFlight> {
    (0..n)
        .map(|i| {
            let name = format!("{tag}-{i}.bin");
            let bytes = data::bytes(size, 1000 + i as u64);
            let path = write(local, &name, &bytes);
            let mut client = d.client();
            // Slow enough to be in flight when a member dies.
            client.upload_rate = Some(8 << 20);
            tokio::spawn(async move {
                let sent = client.send(SendVia::Signal, &path, None, &NoProgress).await;
                (name, bytes, sent)
            })
        })
        .collect()
}

/// Every acknowledged upload is stored whole (read through `check`); every
/// refused one has no name. Returns how many were acknowledged.
async fn settle(tasks: Vec<InFlight>, check: &Ferryd, cluster: &Cluster, local: &Path) -> usize {
    let mut ok = 0;
    for t in tasks {
        let (name, bytes, sent) = t.await.unwrap();
        match sent {
            Ok(s) => {
                ok += 1;
                let stored = s.stored_as.unwrap();
                let out = local.join(format!("check-{stored}"));
                check
                    .client()
                    .get(GetVia::Signal, &stored, &out, true, &NoProgress)
                    .await
                    .unwrap();
                assert_same_bytes(&std::fs::read(&out).unwrap(), &bytes, &stored);
            }
            Err(e) => {
                eprintln!("{name}: refused cleanly: {e}");
                assert!(
                    cluster.etcd_keys(&format!("ferry/n/{name}")).is_empty(),
                    "{name} failed but has a name"
                );
            }
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn a_garage_node_killed_mid_run() {
    let _turn = TURN.lock().await;
    let (cluster, a, b) = two_instances("");
    let local = tempfile::tempdir().unwrap();
    let before = write(local.path(), "before.bin", &data::bytes(3 << 20, 5));
    a.client()
        .send(SendVia::Signal, &before, None, &NoProgress)
        .await
        .unwrap();
    let in_flight = uploads(&a, local.path(), "flight", 4, 24 << 20);
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.stop("garage", 3);
    let done = settle(in_flight, &b, &cluster, local.path()).await;
    eprintln!("{done} of 4 uploads in flight finished with garage node 3 down");
    // New transfers succeed with the node down, both ways.
    let after = uploads(&b, local.path(), "after", 3, 10 << 20);
    assert_eq!(settle(after, &a, &cluster, local.path()).await, 3);
    get_everywhere(&b, "before.bin", &data::bytes(3 << 20, 5), local.path()).await;
    cluster.start("garage", 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn an_etcd_member_killed_mid_run() {
    let _turn = TURN.lock().await;
    let (cluster, a, b) = two_instances("");
    let local = tempfile::tempdir().unwrap();
    let in_flight = uploads(&a, local.path(), "flight", 4, 16 << 20);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The first member in every instance's list.
    cluster.stop("etcd", 1);
    let done = settle(in_flight, &b, &cluster, local.path()).await;
    eprintln!("{done} of 4 uploads in flight finished with etcd member 1 down");
    let after = uploads(&b, local.path(), "after", 3, 2 << 20);
    assert_eq!(settle(after, &a, &cluster, local.path()).await, 3);
    cluster.start("etcd", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn a_ferryd_killed_mid_upload_leaves_nothing_and_cleans_up_on_restart() {
    let _turn = TURN.lock().await;
    let (cluster, a, b) = two_instances("");
    let local = tempfile::tempdir().unwrap();
    let kept = data::bytes(2 << 20, 9);
    let path = write(local.path(), "kept.bin", &kept);
    b.client()
        .send(SendVia::Tcp, &path, None, &NoProgress)
        .await
        .unwrap();
    eventually(10, "kept.bin named", || {
        !cluster.etcd_keys("ferry/n/kept.bin").is_empty()
    });
    // A handout tcp_upload of 40 MiB to B, cut after 20 MiB (two parts stored).
    let mut s = tokio::net::TcpStream::connect(b.addr("tcp_upload"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&ferry_proto::tcp_upload::encode_header(40 << 20, "cut.bin"))
        .await
        .unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"go ahead");
    s.write_all(&data::bytes(20 << 20, 3)).await.unwrap();
    eventually(20, "the cut upload's multipart upload started", || {
        cluster.open_multipart_uploads() == 1
    });
    let (state, config) = (b.state.clone(), b.config.clone());
    b.kill();
    drop(s);
    // Nothing partial is visible; the other instance serves everything.
    assert!(cluster.etcd_keys("ferry/n/cut.bin").is_empty());
    assert_eq!(
        cluster.etcd_keys("ferry/p/").len(),
        1,
        "the cut upload is recorded as pending"
    );
    get_everywhere(&a, "kept.bin", &kept, local.path()).await;
    let err = a
        .client()
        .get(
            GetVia::Signal,
            "cut.bin",
            &local.path().join("x"),
            true,
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
    // Restarted, B removes what it left: the multipart upload and its record.
    let b = Ferryd::start_config(&config, &state).expect("b restarts");
    let swept = b.wait_event("swept leftovers from the object store");
    assert_eq!(swept["uploads"], 1, "{swept}");
    assert!(cluster.etcd_keys("ferry/p/").is_empty());
    assert_eq!(cluster.open_multipart_uploads(), 0);
    assert_eq!(cluster.objects().len(), 1, "only kept.bin's object");
    get_everywhere(&b, "kept.bin", &kept, local.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn the_whole_store_unreachable_is_a_clear_refusal() {
    let _turn = TURN.lock().await;
    let (cluster, a, _b) = two_instances("");
    let local = tempfile::tempdir().unwrap();
    let kept = data::bytes(100_000, 11);
    let path = write(local.path(), "kept.bin", &kept);
    a.client()
        .send(SendVia::Signal, &path, None, &NoProgress)
        .await
        .unwrap();
    // Every Garage node down: uploads refused with the reason, nothing acknowledged.
    for n in 1..=3 {
        cluster.stop("garage", n);
    }
    let path = write(local.path(), "lost.bin", &data::bytes(100_000, 12));
    let err = a
        .client()
        .send(SendVia::Signal, &path, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("storage unavailable"), "{err}");
    let err = a
        .client()
        .get(
            GetVia::Signal,
            "kept.bin",
            &local.path().join("x"),
            true,
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unavailable") || err.to_string().contains("store"),
        "{err}"
    );
    assert!(cluster.etcd_keys("ferry/n/lost.bin").is_empty());
    // Every etcd member down too: an upload is refused before its data.
    for n in 1..=3 {
        cluster.stop("etcd", n);
    }
    let err = a
        .client()
        .send(SendVia::Tcp, &path, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    // A new instance will not start on an unreachable store: exit 69.
    let c = cluster.dir.path().join("c");
    std::fs::write(c.with_extension("toml"), cluster.storage_toml()).unwrap();
    let (status, log) = Ferryd::start_config(&c.with_extension("toml"), &c)
        .err()
        .expect("c refuses to start");
    assert_eq!(status.code(), Some(69), "{log}");
    assert!(
        log.contains("cannot start") && log.contains("bucket"),
        "{log}"
    );
    let env = std::fs::read_to_string(cluster.dir.path().join("s3.env")).unwrap();
    let secret = env
        .lines()
        .find_map(|l| l.strip_prefix("AWS_SECRET_ACCESS_KEY="))
        .unwrap();
    assert!(!log.contains(secret), "the secret is not logged");
    // The bucket back, etcd still down: refused again, etcd named.
    for n in 1..=3 {
        cluster.start("garage", n);
    }
    eventually(60, "Garage answers again", || cluster.s3_ready());
    let (status, log) = Ferryd::start_config(&c.with_extension("toml"), &c)
        .err()
        .expect("c refuses to start without etcd");
    assert_eq!(status.code(), Some(69), "{log}");
    assert!(log.contains("etcd (http://127.0.0.1:2379"), "{log}");
    // Back up: A serves again, with what it acknowledged.
    for n in 1..=3 {
        cluster.start("etcd", n);
    }
    eventually(60, "A serves kept.bin again", || {
        let rt = tokio::runtime::Handle::current();
        let out = local.path().join("again");
        tokio::task::block_in_place(|| {
            rt.block_on(
                a.client()
                    .get(GetVia::Signal, "kept.bin", &out, true, &NoProgress),
            )
        })
        .is_ok()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn reject_and_retries_hold_across_instances() {
    let _turn = TURN.lock().await;
    let (cluster, a, b) = two_instances("on_conflict = \"reject\"");
    let local = tempfile::tempdir().unwrap();
    let first = write(local.path(), "x/r.bin", &data::bytes(70_000, 1));
    let other = write(local.path(), "y/r.bin", &data::bytes(70_000, 2));
    let sent = a
        .client()
        .send(SendVia::Signal, &first, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(sent.stored_as.as_deref(), Some("r.bin"));
    // The same bytes again through B: a retry, acknowledged under the name.
    let again = b
        .client()
        .send(SendVia::Signal, &first, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(again.stored_as.as_deref(), Some("r.bin"));
    // Different bytes under the name through B: refused, the first kept.
    let err = b
        .client()
        .send(SendVia::Signal, &other, None, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("r.bin already exists"), "{err}");
    get_everywhere(&b, "r.bin", &data::bytes(70_000, 1), local.path()).await;
    assert_eq!(
        cluster.objects().len(),
        1,
        "neither the retry nor the refused upload kept an object"
    );
    assert!(cluster.etcd_keys("ferry/p/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn overwrite_across_instances_and_a_cut_tree_leaves_nothing() {
    let _turn = TURN.lock().await;
    let (cluster, a, b) = two_instances("on_conflict = \"overwrite\"");
    let local = tempfile::tempdir().unwrap();
    let old_bytes = data::bytes(40 << 20, 1);
    let old = write(local.path(), "x/o.bin", &old_bytes);
    let new = write(local.path(), "y/o.bin", &data::bytes(3000, 2));
    a.client()
        .send(SendVia::Signal, &old, None, &NoProgress)
        .await
        .unwrap();
    // A handout magic download of the old version, 1 MiB read, in flight
    // while B replaces the file: it finishes on the old version.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(a.addr("magic_download"))
        .await
        .unwrap();
    let mut request = vec![0x49, 0x7E, 0x01, 0x00, 5];
    request.extend_from_slice(b"o.bin");
    slow.write_all(&request).await.unwrap();
    let mut head = vec![0u8; 8 + (1 << 20)];
    slow.read_exact(&mut head).await.unwrap();
    let sent = b
        .client()
        .send(SendVia::Signal, &new, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(sent.stored_as.as_deref(), Some("o.bin"));
    get_everywhere(&a, "o.bin", &data::bytes(3000, 2), local.path()).await;
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).await.unwrap();
    head.extend_from_slice(&rest);
    let (status, len, body) = handout::parse_magic(&head);
    assert_eq!((status, len as usize), (1, old_bytes.len()));
    assert_same_bytes(
        body,
        &old_bytes,
        "the old version, read across the overwrite",
    );
    // The old object is kept for downloads in flight, recorded as garbage.
    assert_eq!(cluster.etcd_keys("ferry/g/").len(), 1);
    assert_eq!(cluster.objects().len(), 2);
    // A tree cut in the middle: no name, and its objects go.
    let tree = local.path().join("cut-tree");
    write(&tree, "a.txt", b"first file");
    write(&tree, "big.bin", &data::bytes(24 << 20, 3));
    let mut c = a.client();
    c.upload_rate = Some(8 << 20);
    let task = tokio::spawn(async move { c.send_dir(&tree, None, &NoProgress).await });
    eventually(20, "the tree's first file stored", || {
        cluster.objects().len() >= 3
    });
    task.abort();
    let _ = task.await;
    eventually(30, "the cut tree's objects removed", || {
        cluster.etcd_keys("ferry/p/").is_empty()
            && cluster.objects().len() == 2
            && cluster.open_multipart_uploads() == 0
    });
    assert!(cluster.etcd_keys("ferry/n/cut-tree").is_empty());
    let err = b
        .client()
        .get_dir("cut-tree", &local.path().join("back"), false, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}

/// Issue 26, part 2: a multipart upload no pending record explains (the
/// answer to CreateMultipartUpload was lost) is aborted once older than
/// `sweep_after`; an upload in flight, whose record is there, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn an_orphaned_multipart_upload_is_aborted_and_one_in_flight_is_not() {
    let _turn = TURN.lock().await;
    let cluster = Cluster::up();
    let a = Ferryd::start_edited(&cluster, &cluster.dir.path().join("a"), "", |c| {
        if let Some(s3) = c.storage.s3.as_mut() {
            s3.sweep_after = ferry_config::Dur(Duration::from_secs(2));
        }
    });
    // An upload in flight: 20 of 40 MiB sent, its multipart upload open.
    let mut s = tokio::net::TcpStream::connect(a.addr("tcp_upload"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&ferry_proto::tcp_upload::encode_header(
        40 << 20,
        "slow.bin",
    ))
    .await
    .unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"go ahead");
    let first = data::bytes(40 << 20, 5);
    s.write_all(&first[..20 << 20]).await.unwrap();
    eventually(20, "the upload's multipart upload started", || {
        cluster.open_multipart_uploads() == 1
    });
    let in_flight = cluster.open_multipart_keys();
    // The orphan: started on the store under ferry's objects, never recorded.
    cluster.start_multipart("objects/00000001-orphan-1");
    assert_eq!(cluster.open_multipart_uploads(), 2);
    let swept = a.wait_event("swept leftovers from the object store");
    assert_eq!(swept["orphaned_multipart_uploads"], 1, "{swept}");
    assert_eq!(
        cluster.open_multipart_keys(),
        in_flight,
        "the upload in flight is kept"
    );
    // The upload in flight still completes.
    s.write_all(&first[20 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "STORED: slow.bin");
    eventually(10, "no multipart upload left", || {
        cluster.open_multipart_uploads() == 0
    });
    let local = tempfile::tempdir().unwrap();
    get_everywhere(&a, "slow.bin", &first, local.path()).await;
}

/// Issue 26, part 1: an https store behind a private CA (a TLS proxy in
/// front of Garage, its certificate signed by a CA made for the test):
/// trusted through `storage.s3.ca_file`, files go through it both ways; a
/// wrong CA, or none, is a clear start-up error (exit 69, the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn an_https_store_behind_a_private_ca() {
    let _turn = TURN.lock().await;
    let cluster = Cluster::up();
    let proxy = support::TlsProxy::start(3943);
    let over_tls = |ca: Option<std::path::PathBuf>| {
        let endpoint = proxy.endpoint.clone();
        move |c: &mut ferry_config::Config| {
            if let Some(s3) = c.storage.s3.as_mut() {
                s3.endpoint = endpoint;
                s3.ca_file = ca;
            }
        }
    };
    for (name, ca) in [("wrong", Some(proxy.other_ca.clone())), ("none", None)] {
        let state = cluster.dir.path().join(format!("tls-{name}"));
        let config = Ferryd::write_config(&cluster, &state, "", over_tls(ca));
        let (status, log) = match Ferryd::start_config(&config, &state) {
            Err(e) => e,
            Ok(_) => panic!("ferryd started with the {name} CA"),
        };
        assert_eq!(status.code(), Some(69), "{name}: {log}");
        assert!(
            log.contains("certificate") && log.contains("127.0.0.1:3943"),
            "{name}: {log}"
        );
    }
    let a = Ferryd::start_edited(
        &cluster,
        &cluster.dir.path().join("tls"),
        "",
        over_tls(Some(proxy.ca.clone())),
    );
    let local = tempfile::tempdir().unwrap();
    let bytes = data::bytes(12 << 20, 26);
    let path = write(local.path(), "over-tls.bin", &bytes);
    a.client()
        .send(SendVia::Signal, &path, None, &NoProgress)
        .await
        .unwrap();
    get_everywhere(&a, "over-tls.bin", &bytes, local.path()).await;
    // The bytes are in Garage, read straight from it (no proxy).
    let b = Ferryd::start(&cluster, &cluster.dir.path().join("plain"), "");
    get_everywhere(&b, "over-tls.bin", &bytes, local.path()).await;
}

/// Issue 26, part 3: a state directory copied from a running instance
/// (a cloned image) cannot start a second holder of its id, and the first
/// loses nothing; an upload whose pending record was swept can never be
/// named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the loopback cluster (tests/cluster/cluster.sh); .ci/run runs it"]
async fn a_cloned_state_directory_refuses_to_start_and_a_swept_upload_is_never_named() {
    let _turn = TURN.lock().await;
    let cluster = Cluster::up();
    let dir = cluster.dir.path();
    let a = Ferryd::start(&cluster, &dir.join("a"), "");
    assert_eq!(cluster.etcd_keys("ferry/i/").len(), 1, "A holds its id");
    let local = tempfile::tempdir().unwrap();
    let kept = data::bytes(3 << 20, 41);
    let path = write(local.path(), "kept.bin", &kept);
    a.client()
        .send(SendVia::Signal, &path, None, &NoProgress)
        .await
        .unwrap();
    // An upload in flight on A: its pending record and multipart upload.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let slow = data::bytes(20 << 20, 42);
    let mut s = tokio::net::TcpStream::connect(a.addr("tcp_upload"))
        .await
        .unwrap();
    s.write_all(&ferry_proto::tcp_upload::encode_header(
        slow.len() as u64,
        "slow.bin",
    ))
    .await
    .unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    s.write_all(&slow[..10 << 20]).await.unwrap();
    eventually(20, "the upload in flight is recorded", || {
        cluster.etcd_keys("ferry/p/").len() == 1
    });
    // The clone: A's state directory copied, as from a disk image.
    let clone = dir.join("a-clone");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.join("a"))
        .arg(&clone)
        .status()
        .unwrap();
    assert!(cp.success());
    let config = Ferryd::write_config(&cluster, &clone, "", |_| {});
    let (status, log) = match Ferryd::start_config(&config, &clone) {
        Err(e) => e,
        Ok(_) => panic!("the clone started"),
    };
    assert_eq!(status.code(), Some(75), "{log}");
    assert!(log.contains("is held by a running ferryd"), "{log}");
    // A lost nothing: its upload in flight completes, every file reads back.
    s.write_all(&slow[10 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "STORED: slow.bin");
    get_everywhere(&a, "kept.bin", &kept, local.path()).await;
    get_everywhere(&a, "slow.bin", &slow, local.path()).await;
    // An upload whose record a sweeper removed (as if A had seemed gone)
    // fails, and no name points at what may be gone.
    let mut s = tokio::net::TcpStream::connect(a.addr("tcp_upload"))
        .await
        .unwrap();
    s.write_all(&ferry_proto::tcp_upload::encode_header(
        slow.len() as u64,
        "swept.bin",
    ))
    .await
    .unwrap();
    s.read_exact(&mut reply).await.unwrap();
    s.write_all(&slow[..10 << 20]).await.unwrap();
    eventually(20, "the second upload is recorded", || {
        cluster.etcd_keys("ferry/p/").len() == 1
    });
    cluster.etcd_delete_prefix("ferry/p/");
    s.write_all(&slow[10 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("record was swept"), "{answer}");
    assert!(cluster.etcd_keys("ferry/n/swept.bin").is_empty());
}
