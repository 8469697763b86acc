//! The handout 004 framing when ferryd cannot read for a moment: the
//! client's pauses are then lost in the socket, and ferryd must never store
//! a file with bytes that are not its own (issue 22). ferryd is stopped
//! (SIGSTOP) for 150 ms across one pause of one file of a connection, as a
//! busy or swapping box would stall it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;

const LAB1: (&str, &[u8]) = ("lab1.py", b"print('lab 1')\n");
const LAB2: (&str, &[u8]) = ("lab2.py", b"print('lab 2')\n");

/// Which pause ferryd is stopped across.
#[derive(Clone, Copy, PartialEq)]
enum Across {
    /// None: stopped while the tag `SAF` arrives, continued before the name
    /// is sent (the name comes to a prompt reader).
    Tag,
    /// Between a file's name and its data.
    NameData,
    /// Between a file's data and its `DON`.
    DataDon,
}

/// The handout client's pauses. Real: ferryd is another process, stopped
/// and continued across them on the real clock.
fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Stops ferryd and waits until it is stopped (the signal is delivered a
/// moment after `kill` returns, and a thread on the other core may read in
/// between).
fn stop(d: &common::Running) {
    d.signal(libc::SIGSTOP);
    let stopped = common::eventually(|| {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        state == Some("T")
    });
    assert!(stopped, "ferryd did not stop");
}

/// The handout client's send_file for each file on one connection (`SAF`
/// pause name pause data pause `DON`), with ferryd stopped across the given
/// pause of file `at`: stopped before the first part is sent, continued
/// 150 ms later, after the second part arrived. Writes after ferryd closed
/// the connection fail, as they do for the handout client.
fn send_files(d: &common::Running, files: &[(&str, &[u8])], at: usize, across: Across) {
    let mut s = TcpStream::connect(d.addr("signal")).unwrap();
    let mut send = |bytes: &[u8]| {
        let _ = s.write_all(bytes);
    };
    for (i, (name, data)) in files.iter().enumerate() {
        let parts: [&[u8]; 4] = [b"SAF", name.as_bytes(), data, b"DON"];
        let stop_before = match across {
            Across::Tag => 0,
            Across::NameData => 1,
            Across::DataDon => 2,
        };
        for (k, part) in parts.iter().enumerate() {
            if i == at && k == stop_before && across == Across::Tag {
                stop(d);
                send(part);
                pause(60);
                d.signal(libc::SIGCONT);
                pause(40);
            } else if i == at && k == stop_before {
                stop(d);
                send(part);
                pause(100);
                send(parts[k + 1]);
                pause(50);
                d.signal(libc::SIGCONT);
                pause(50);
            } else if !(i == at && k == stop_before + 1 && across != Across::Tag) {
                send(part);
                pause(100);
            }
        }
    }
    // The handout client then closes; ferryd's end of the connection goes.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut rest);
}

/// Runs one case on a fresh ferryd: every file in `stored` must be there
/// with exactly its bytes, and nothing else; `failed` files each get one
/// `transfer failed` event saying the pause after the name was lost.
fn case(at: usize, across: Across, stored: &[(&str, &[u8])], failed: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let d = common::start(dir.path(), &root, "", None);
    send_files(&d, &[LAB1, LAB2], at, across);
    for name in failed {
        let ev = d.wait_event("transfer failed");
        // The name as it arrived: run into its data.
        let requested = ev["requested"].as_str().unwrap_or_default();
        assert!(requested.starts_with(name), "{name}: {ev}");
        let reason = ev["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("the pause after the name was lost"),
            "{name}: {ev}"
        );
    }
    let want: Vec<String> = stored.iter().map(|(n, _)| n.to_string()).collect();
    common::eventually(|| common::visible_files(&root) == want);
    assert_eq!(common::visible_files(&root), want);
    for (name, bytes) in stored {
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(root.join(name)).unwrap()),
            String::from_utf8_lossy(bytes),
            "{name}"
        );
    }
    assert_eq!(common::work_entries(&root), 0, "no partial file is left");
}

#[test]
fn stopped_across_data_and_don_of_the_first_file_both_files_are_whole() {
    case(0, Across::DataDon, &[LAB1, LAB2], &[]);
}

#[test]
fn stopped_across_data_and_don_of_a_later_file_both_files_are_whole() {
    case(1, Across::DataDon, &[LAB1, LAB2], &[]);
}

#[test]
fn stopped_across_name_and_data_of_the_first_file_it_is_refused_and_the_next_stored() {
    case(0, Across::NameData, &[LAB2], &["lab1.py"]);
}

#[test]
fn stopped_across_name_and_data_of_a_later_file_it_is_refused_and_the_first_kept() {
    case(1, Across::NameData, &[LAB1], &["lab2.py"]);
}

#[test]
fn stopped_while_only_the_tag_arrived_the_file_is_stored() {
    case(1, Across::Tag, &[LAB1, LAB2], &[]);
}
