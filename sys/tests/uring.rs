//! The io_uring backend on its own, over loopback: provided-buffer exhaustion (ENOBUFS),
//! short sends under backpressure (copying and zero-copy), removal with operations in flight,
//! connect.

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bidir_sys::uring::{IoUring, UringConfig, UringWaker, probe};
use bidir_sys::{Backend, Completion, Token};
use socket2::SockRef;

fn backend(buffers: u16, buffer_size: usize) -> IoUring {
    backend_zc(buffers, buffer_size, None)
}

fn backend_zc(buffers: u16, buffer_size: usize, send_zc_threshold: Option<usize>) -> IoUring {
    probe().expect("this kernel has io_uring with everything the backend needs");
    let config = UringConfig { entries: 256, buffers, buffer_size, send_zc_threshold };
    IoUring::new(config, Arc::new(UringWaker::new().unwrap())).unwrap()
}

/// Accepts `n` connections through the backend, registering them as tokens 0..n.
fn accept(ring: &mut IoUring, listener: &TcpListener, n: usize) -> Vec<TcpStream> {
    ring.add_listener(listener.try_clone().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.len() < n && Instant::now() < deadline {
        ring.poll(Some(Duration::from_millis(50)), |c| {
            if let Completion::Accepted { stream, .. } = c {
                accepted.push(stream);
            }
        })
        .unwrap();
    }
    assert_eq!(accepted.len(), n);
    assert!(accepted.iter().all(|s| s.nodelay().unwrap()), "accepted streams arrive configured");
    assert!(
        accepted.iter().all(|s| !SockRef::from(s).nonblocking().unwrap()),
        "the ring accepts streams blocking, so add_stream need not make them so"
    );
    for (i, stream) in accepted.into_iter().enumerate() {
        ring.add_stream(Token(i), stream).unwrap();
    }
    clients
}

/// Polls until `total` bytes arrived over all streams (or `secs` passed); returns them by
/// token. Every completion carries at most `max_piece` bytes.
fn receive(
    ring: &mut IoUring,
    total: usize,
    max_piece: usize,
    secs: u64,
) -> HashMap<usize, Vec<u8>> {
    let mut got: HashMap<usize, Vec<u8>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while got.values().map(Vec::len).sum::<usize>() < total && Instant::now() < deadline {
        ring.poll(Some(Duration::from_millis(20)), |c| {
            if let Completion::Received { token, data } = c {
                assert!(data.len() <= max_piece);
                got.entry(token.0).or_default().extend_from_slice(data);
            }
        })
        .unwrap();
    }
    got
}

#[test]
fn a_dry_buffer_ring_loses_nothing() {
    // Two 64-byte buffers for eight connections that each send 64 KiB: receives end with
    // ENOBUFS again and again and must be re-armed without losing or reordering a byte.
    let mut ring = backend(2, 64);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let clients = accept(&mut ring, &listener, 8);
    let senders: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                let data: Vec<u8> = (0..64 << 10).map(|j| (j * 7 + i) as u8).collect();
                c.write_all(&data).unwrap();
                c
            })
        })
        .collect();
    let got = receive(&mut ring, 8 * (64 << 10), 64, 20);
    let _clients: Vec<TcpStream> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    for i in 0..8 {
        let expected: Vec<u8> = (0..64 << 10).map(|j| (j * 7 + i) as u8).collect();
        assert!(got.get(&i) == Some(&expected), "connection {i}: bytes lost or reordered");
    }
}

#[test]
fn small_receives_share_a_buffer_where_the_kernel_consumes_incrementally() {
    // Two 64 KiB buffers, 32 connections with 100 bytes each: with incremental consumption
    // every receive packs into the current buffer and none starves; without it each receive
    // takes a whole buffer and the ring runs dry at once.
    let mut ring = backend(2, 64 << 10);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = accept(&mut ring, &listener, 32);
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&[i as u8; 100]).unwrap();
    }
    let got = receive(&mut ring, 3200, usize::MAX, 10);
    for i in 0..32 {
        assert_eq!(got.get(&i), Some(&vec![i as u8; 100]), "connection {i}");
    }
    if ring.incremental_buffers() {
        assert_eq!(ring.starved_receives(), 0);
    } else {
        eprintln!("this kernel has no incremental buffer consumption (before 6.12)");
        assert!(ring.starved_receives() > 0);
    }
}

#[test]
fn short_sends_are_finished_in_order_then_writable() {
    short_sends(None, false);
}

#[test]
fn a_nonblocking_stream_works_as_a_blocking_one() {
    // add_stream leaves the descriptor's mode alone: the receive and the sends must wait for
    // readiness inside io_uring even with O_NONBLOCK set, never fail with EAGAIN.
    short_sends(None, true);
}

#[test]
fn zero_copy_sends_keep_their_buffer_until_the_kernel_lets_go() {
    // Every send of 4 KiB or more goes out zero-copy: a buffer reused before its notification
    // would show as corrupted bytes at the reader.
    short_sends(Some(4096), false);
}

/// 8 MiB pushed at a client that reads nothing for a while, then the stream is removed with
/// its last send in flight; the client must get every byte, in order. With `nonblocking`, the
/// stream is accepted outside the ring and added with O_NONBLOCK set, after a first receive.
fn short_sends(send_zc_threshold: Option<usize>, nonblocking: bool) {
    let mut ring = backend_zc(64, 4096, send_zc_threshold);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = if nonblocking {
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        ring.add_stream(Token(0), stream).unwrap();
        client.write_all(b"hello").unwrap();
        assert_eq!(receive(&mut ring, 5, usize::MAX, 10).get(&0), Some(&b"hello".to_vec()));
        client
    } else {
        accept(&mut ring, &listener, 1).pop().unwrap()
    };
    // 8 MiB queued while the client reads nothing: the kernel takes part, the backend holds
    // the rest of each send and refuses more until it is all out.
    let message: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut offset = 0;
    let mut sends = 0;
    let mut refused = 0;
    let reader = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        all
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while offset < message.len() && Instant::now() < deadline {
        match ring.send(Token(0), &[IoSlice::new(&message[offset..])]).unwrap() {
            0 => {
                refused += 1;
                let mut writable = false;
                while !writable {
                    ring.poll(Some(Duration::from_millis(50)), |c| {
                        if matches!(c, Completion::Writable { token: Token(0) }) {
                            writable = true;
                        }
                    })
                    .unwrap();
                }
            }
            n => {
                offset += n;
                sends += 1;
            }
        }
    }
    assert!(refused > 0, "the client read nothing, so some send had to wait");
    assert!(sends > 1, "the backend takes at most 256 KiB per send");
    // Let the last send finish, then close: removal keeps a send in flight going.
    ring.remove_stream(Token(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while format!("{ring:?}").contains("retired: 1") && Instant::now() < deadline {
        ring.poll(Some(Duration::from_millis(20)), |_| {}).unwrap();
    }
    let all = reader.join().unwrap();
    assert_eq!(all.len(), message.len());
    assert!(all == message, "bytes reordered or corrupted");
}

#[test]
fn removing_a_stream_with_a_receive_in_flight_reports_nothing_more() {
    let mut ring = backend(16, 1024);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = accept(&mut ring, &listener, 2);
    ring.remove_stream(Token(0));
    // The client's data for the removed stream must not surface under its token, even
    // when the token is reused at once by a new stream.
    clients[0].write_all(b"ghost").ok();
    let fresh = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut accepted = None;
    let mut ghost = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.is_none() && Instant::now() < deadline {
        ring.poll(Some(Duration::from_millis(20)), |c| match c {
            Completion::Accepted { stream, .. } => accepted = Some(stream),
            Completion::Received { token: Token(0), .. } => ghost = true,
            _ => {}
        })
        .unwrap();
    }
    ring.add_stream(Token(0), accepted.unwrap()).unwrap();
    (&fresh).write_all(b"fresh").unwrap();
    let got = receive(&mut ring, 5, usize::MAX, 5);
    assert!(!ghost);
    assert_eq!(got.get(&0).map(Vec::as_slice), Some(&b"fresh"[..]));
    // The removed stream's descriptor was closed: its client sees EOF.
    clients[0].set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(clients[0].read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn connect_completes_or_fails() {
    let mut ring = backend(16, 1024);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.connect(Token(3), listener.local_addr().unwrap()).unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    ring.connect(Token(4), closed).unwrap();
    let mut outcomes = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while outcomes.len() < 2 && Instant::now() < deadline {
        ring.poll(Some(Duration::from_millis(20)), |c| {
            if let Completion::Connected { token, error } = c {
                outcomes.insert(token.0, error.map(|e| e.kind()));
            }
        })
        .unwrap();
    }
    assert_eq!(outcomes.get(&3), Some(&None));
    assert_eq!(outcomes.get(&4), Some(&Some(std::io::ErrorKind::ConnectionRefused)));
    // The connected stream carries bytes both ways.
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(b"hello").unwrap();
    assert!(matches!(ring.send(Token(3), &[IoSlice::new(b"world")]), Ok(5)));
    let got = receive(&mut ring, 5, usize::MAX, 5);
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"hello"[..]));
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"world");
}
