//! `kill -9` in the middle of many concurrent uploads, then a restart on the
//! same root: every acknowledged file is there byte for byte, nothing visible
//! is partial, and the work area is emptied at start.
//!
//! The quick variant (3 rounds) runs in CI; `cargo test -p ferryd --test crash
//! -- --ignored` runs 50.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The content a client sends under `name`: a function of the name, so any
/// file found on disk can be checked without knowing which client wrote it.
fn content(name: &str) -> Vec<u8> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let size = (seed % 300_000) as usize;
    let mut data = vec![0u8; size];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    data
}

fn rounds(rounds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let acked: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let mut total_acked = 0;
    for round in 0..rounds {
        let d = common::start(dir.path(), &root, "", None);
        // The work area was emptied at start, whatever the last kill left.
        assert_eq!(
            common::work_entries(&root),
            0,
            "round {round}: leftovers survived a restart"
        );
        let signal = d.addr("signal");
        let tcp = d.addr("tcp_upload");
        let mut clients = Vec::new();
        for c in 0..16 {
            let acked = Arc::clone(&acked);
            clients.push(std::thread::spawn(move || {
                for j in 0.. {
                    let name = format!("r{round}-c{c}-{j}.bin");
                    let data = content(&name);
                    // Half the clients use tcp_upload, which has no acknowledgement.
                    if c % 2 == 1 {
                        use std::io::{Read, Write};
                        let Ok(mut s) = std::net::TcpStream::connect(tcp) else {
                            return;
                        };
                        let hdr = ferry_proto::tcp_upload::encode_header(data.len() as u64, &name);
                        if s.write_all(&hdr).is_err() {
                            return;
                        }
                        let mut go = [0u8; 8];
                        if s.read_exact(&mut go).is_err() || s.write_all(&data).is_err() {
                            return;
                        }
                        continue;
                    }
                    match common::saf_upload(signal, &name, &data) {
                        Ok(Ok(stored)) => {
                            assert_eq!(stored, name);
                            acked.lock().unwrap().insert(name, data.len());
                        }
                        Ok(Err(reason)) => panic!("{name}: refused: {reason}"),
                        Err(_) => return, // the daemon died under us
                    }
                }
            }));
        }
        // Pull the plug once this round has had its share of
        // acknowledgements (8 to 31), with the other clients mid-transfer.
        let before = acked.lock().unwrap().len();
        let share = 8 + (round as usize * 37) % 24;
        assert!(
            common::eventually(|| acked.lock().unwrap().len() >= before + share),
            "round {round}: {share} uploads were not acknowledged"
        );
        d.signal(libc::SIGKILL);
        let mut d = d;
        d.wait_exit();
        for c in clients {
            c.join().expect("client thread");
        }
        // Every file visible is whole; every acknowledged one is there.
        for name in common::visible_files(&root) {
            let got = std::fs::read(root.join(&name)).unwrap();
            assert!(
                got == content(&name),
                "round {round}: {name} is partial or wrong ({} bytes)",
                got.len()
            );
        }
        for (name, len) in acked.lock().unwrap().iter() {
            let got = std::fs::read(root.join(name))
                .unwrap_or_else(|_| panic!("round {round}: acknowledged {name} is gone"));
            assert_eq!(got.len(), *len);
        }
        total_acked = acked.lock().unwrap().len();
    }
    // A last start cleans whatever the last kill left.
    let mut d = common::start(dir.path(), &root, "", None);
    assert_eq!(common::work_entries(&root), 0);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0));
    eprintln!("{rounds} kill -9 rounds: {total_acked} acknowledged files, all present and whole; {} files visible, none partial", common::visible_files(&root).len());
    assert!(
        total_acked > 0,
        "no upload was acknowledged before the kills"
    );
}

#[test]
fn kill_9_mid_transfer_quick() {
    rounds(3);
}

#[test]
#[ignore = "long run: 50 rounds"]
fn kill_9_mid_transfer_long() {
    rounds(50);
}
