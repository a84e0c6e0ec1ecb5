//! The in-memory backend against the backend contract, rule by rule, and its driver.

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// What a poll reported, owned, for comparing.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Accepted(PeerId, SocketAddr),
    Received(Token, Vec<u8>),
    Writable(Token),
    Closed(Token, Option<io::ErrorKind>),
    Connected(Token, Option<io::ErrorKind>),
    Woken,
}

/// Polls once with `timeout`; accepted streams go to `accepted`.
fn poll(
    backend: &mut MemBackend,
    timeout: Option<Duration>,
    accepted: &mut Vec<MemStream>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    backend
        .poll(timeout, |c| {
            seen.push(match c {
                Completion::Accepted { stream, peer, .. } => {
                    let id = stream.peer();
                    accepted.push(stream);
                    Seen::Accepted(id, peer)
                }
                Completion::Received { token, data } => {
                    let got = data.to_vec();
                    data.fill(0xa5); // lent mutably: the worker unmasks in place
                    Seen::Received(token, got)
                }
                Completion::Writable { token } => Seen::Writable(token),
                Completion::Closed { token, error } => Seen::Closed(token, error.map(|e| e.kind())),
                Completion::Connected { token, error } => {
                    Seen::Connected(token, error.map(|e| e.kind()))
                }
                Completion::Woken => Seen::Woken,
            });
        })
        .unwrap();
    seen
}

/// A backend with one peer accepted and added under `token`.
fn open(token: Token) -> (MemBackend, MemNet, PeerId) {
    let (mut backend, net) = MemBackend::new(VirtualClock::new());
    let peer = net.connect_peer(addr(1000)).unwrap();
    let mut accepted = Vec::new();
    assert_eq!(poll(&mut backend, None, &mut accepted), [Seen::Accepted(peer, addr(1000))]);
    backend.add_stream(token, accepted.pop().unwrap()).unwrap();
    assert!(net.is_open(peer));
    (backend, net, peer)
}

#[test]
fn writes_arrive_in_order_cut_at_the_chunk_size() {
    let (mut backend, net, peer) = open(Token(7));
    net.set_chunk_size(4);
    assert!(net.write(peer, b"hello world"));
    assert!(net.write(peer, b"!"));
    let seen = poll(&mut backend, None, &mut Vec::new());
    let pieces: Vec<&[u8]> = vec![b"hell", b"o wo", b"rld", b"!"];
    let want: Vec<Seen> =
        pieces.into_iter().map(|p| Seen::Received(Token(7), p.to_vec())).collect();
    assert_eq!(seen, want);
    assert_eq!(backend.syscalls().reads, 4);
}

#[test]
fn events_before_the_stream_is_added_wait_for_it() {
    let (mut backend, net) = MemBackend::new(VirtualClock::new());
    let peer = net.connect_peer(addr(1)).unwrap();
    assert!(net.write(peer, b"early"));
    assert!(net.shutdown_write(peer));
    assert_eq!(net.queued(), 1, "only the accept is due");
    let mut accepted = Vec::new();
    assert_eq!(poll(&mut backend, None, &mut accepted), [Seen::Accepted(peer, addr(1))]);
    assert!(poll(&mut backend, None, &mut accepted).is_empty(), "not added: nothing due");
    assert!(!net.is_open(peer) && !net.is_closed(peer));
    backend.add_stream(Token(0), accepted.pop().unwrap()).unwrap();
    assert_eq!(net.token_of(peer), Some(Token(0)));
    assert_eq!(net.peer_of(Token(0)), Some(peer));
    let seen = poll(&mut backend, None, &mut accepted);
    assert_eq!(seen, [Seen::Received(Token(0), b"early".to_vec()), Seen::Closed(Token(0), None)]);
}

#[test]
fn an_accepted_stream_dropped_unadded_closes_the_peer() {
    let (mut backend, net) = MemBackend::new(VirtualClock::new());
    let peer = net.connect_peer(addr(1)).unwrap();
    let mut accepted = Vec::new();
    poll(&mut backend, None, &mut accepted);
    assert!(!net.is_closed(peer));
    drop(accepted);
    assert!(net.is_closed(peer));
    assert!(!net.write(peer, b"x"), "a closed connection takes nothing");
}

#[test]
fn short_writes_wait_for_writable_until_the_budget_rises() {
    let (mut backend, net, peer) = open(Token(1));
    net.set_write_budget(peer, Some(5));
    let bufs = [IoSlice::new(b"abc"), IoSlice::new(b"defg")];
    assert_eq!(backend.send(Token(1), &bufs).unwrap(), 5);
    assert_eq!(backend.send(Token(1), &[IoSlice::new(b"fg")]).unwrap(), 0);
    assert_eq!(net.read(peer), b"abcde");
    assert!(poll(&mut backend, None, &mut Vec::new()).is_empty(), "no room, no Writable");
    net.set_write_budget(peer, None);
    assert_eq!(poll(&mut backend, None, &mut Vec::new()), [Seen::Writable(Token(1))]);
    assert_eq!(backend.send(Token(1), &[IoSlice::new(b"fg")]).unwrap(), 2);
    assert_eq!(net.read(peer), b"fg");
    assert!(net.read(peer).is_empty(), "read takes");
    net.set_write_budget(peer, Some(10));
    assert!(poll(&mut backend, None, &mut Vec::new()).is_empty(), "nothing was cut short");
}

#[test]
fn send_owned_takes_whole_buffers_when_turned_on() {
    let (mut backend, net, peer) = open(Token(2));
    let mut buf = b"whole".to_vec();
    assert!(backend.send_owned(Token(2), &mut buf).is_none(), "off by default");
    net.set_send_owned(true);
    assert!(matches!(backend.send_owned(Token(2), &mut buf), Some(Ok(true))));
    assert!(buf.is_empty() && buf.capacity() >= 5, "emptied, capacity kept");
    assert_eq!(net.read(peer), b"whole");
    net.set_write_budget(peer, Some(3));
    let mut buf = b"toolong".to_vec();
    assert!(backend.send_owned(Token(2), &mut buf).is_none(), "part fits: send copies");
    assert_eq!(backend.send(Token(2), &[IoSlice::new(&buf)]).unwrap(), 3);
    assert!(matches!(backend.send_owned(Token(2), &mut buf), Some(Ok(false))));
    assert_eq!(buf, b"toolong", "untouched when not taken");
    net.set_write_budget(peer, Some(100));
    assert_eq!(poll(&mut backend, None, &mut Vec::new()), [Seen::Writable(Token(2))]);
    assert!(matches!(backend.send_owned(Token(9), &mut buf), Some(Err(_))));
}

#[test]
fn fin_and_reset_end_the_stream_after_its_bytes() {
    let (mut backend, net, peer) = open(Token(3));
    assert!(net.write(peer, b"last"));
    assert!(net.shutdown_write(peer));
    assert!(!net.write(peer, b"after"), "nothing after the FIN");
    assert!(!net.shutdown_write(peer));
    let seen = poll(&mut backend, None, &mut Vec::new());
    assert_eq!(seen, [Seen::Received(Token(3), b"last".to_vec()), Seen::Closed(Token(3), None)]);
    // Half-closed: the server still sends.
    assert_eq!(backend.send(Token(3), &[IoSlice::new(b"bye")]).unwrap(), 3);
    assert_eq!(net.read(peer), b"bye");

    let (mut backend, net, peer) = open(Token(4));
    assert!(net.write(peer, b"x"));
    assert!(net.reset(peer));
    let err = backend.send(Token(4), &[IoSlice::new(b"y")]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    let seen = poll(&mut backend, None, &mut Vec::new());
    let reset = Some(io::ErrorKind::ConnectionReset);
    assert_eq!(seen, [Seen::Received(Token(4), b"x".to_vec()), Seen::Closed(Token(4), reset)]);
}

#[test]
fn nothing_follows_closed() {
    let (mut backend, net, peer) = open(Token(5));
    net.set_write_budget(peer, Some(0));
    assert_eq!(backend.send(Token(5), &[IoSlice::new(b"z")]).unwrap(), 0);
    assert!(net.shutdown_write(peer));
    net.set_write_budget(peer, None); // queues a Writable behind the Closed
    let seen = poll(&mut backend, None, &mut Vec::new());
    assert_eq!(seen, [Seen::Closed(Token(5), None)]);
}

#[test]
fn removal_closes_the_peer_and_silences_the_token_even_when_reused() {
    let (mut backend, net, old) = open(Token(6));
    assert_eq!(backend.send(Token(6), &[IoSlice::new(b"kept")]).unwrap(), 4);
    assert!(net.write(old, b"ghost"));
    backend.remove_stream(Token(6));
    backend.remove_stream(Token(6)); // unknown now: ignored
    assert!(net.is_closed(old) && !net.is_open(old));
    assert_eq!(net.read(old), b"kept", "what was sent before the close is not lost");
    assert_eq!(net.peer_of(Token(6)), None);
    assert!(backend.send(Token(6), &[IoSlice::new(b"x")]).is_err());
    // The token is reused at once: the old peer's bytes never surface under it.
    let fresh = net.connect_peer(addr(2)).unwrap();
    let mut accepted = Vec::new();
    assert_eq!(poll(&mut backend, None, &mut accepted), [Seen::Accepted(fresh, addr(2))]);
    backend.add_stream(Token(6), accepted.pop().unwrap()).unwrap();
    assert!(!net.write(old, b"more"));
    assert!(net.write(fresh, b"fresh"));
    let seen = poll(&mut backend, None, &mut accepted);
    assert_eq!(seen, [Seen::Received(Token(6), b"fresh".to_vec())]);
}

#[test]
fn add_stream_refuses_a_token_in_use_and_closes_the_stream() {
    let (mut backend, net, _) = open(Token(1));
    let peer = net.connect_peer(addr(3)).unwrap();
    let mut accepted = Vec::new();
    poll(&mut backend, None, &mut accepted);
    let err = backend.add_stream(Token(1), accepted.pop().unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert!(net.is_closed(peer));
    // A stream of another net is refused too.
    let (mut other, other_net) = MemBackend::new(VirtualClock::new());
    other_net.connect_peer(addr(4)).unwrap();
    poll(&mut other, None, &mut accepted);
    let err = backend.add_stream(Token(8), accepted.pop().unwrap()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn connects_complete_first_then_carry_bytes_or_fail() {
    let (mut backend, net) = MemBackend::new(VirtualClock::new());
    backend.connect(Token(3), addr(80)).unwrap();
    backend.connect(Token(4), addr(81)).unwrap();
    assert_eq!(
        backend.connect(Token(3), addr(82)).unwrap_err().kind(),
        io::ErrorKind::AlreadyExists
    );
    let connects = net.connects();
    assert_eq!(connects.iter().map(|c| c.1).collect::<Vec<_>>(), [addr(80), addr(81)]);
    let (ok, refused) = (connects[0].0, connects[1].0);
    assert_eq!(net.token_of(ok), Some(Token(3)));
    let err = backend.send(Token(3), &[IoSlice::new(b"early")]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "nothing may be sent yet");
    assert!(net.write(ok, b"101 hello"), "the server may speak first");
    assert!(poll(&mut backend, None, &mut Vec::new()).is_empty(), "nothing before Connected");
    assert!(net.complete_connect(ok, Ok(())));
    assert!(!net.complete_connect(ok, Ok(())), "once");
    assert!(net.write(refused, b"dropped"));
    assert!(net.complete_connect(refused, Err(io::ErrorKind::ConnectionRefused)));
    assert!(net.connects().is_empty());
    let seen = poll(&mut backend, None, &mut Vec::new());
    let want = [
        Seen::Connected(Token(3), None),
        Seen::Received(Token(3), b"101 hello".to_vec()),
        Seen::Connected(Token(4), Some(io::ErrorKind::ConnectionRefused)),
    ];
    assert_eq!(seen, want);
    assert_eq!(backend.send(Token(3), &[IoSlice::new(b"GET")]).unwrap(), 3);
    assert_eq!(net.read(ok), b"GET");
    assert!(backend.send(Token(4), &[IoSlice::new(b"x")]).is_err());
    backend.remove_stream(Token(4));
    // A connect removed before it completes cannot be completed.
    backend.connect(Token(5), addr(83)).unwrap();
    let pending = net.connects()[0].0;
    backend.remove_stream(Token(5));
    assert!(!net.complete_connect(pending, Ok(())));
    assert!(net.is_closed(pending));
}

#[test]
fn waiting_advances_virtual_time_up_to_the_limit() {
    let clock = VirtualClock::new();
    let (mut backend, net) = MemBackend::new(clock.clone());
    let second = Duration::from_secs(1);
    poll(&mut backend, Some(second), &mut Vec::new());
    assert_eq!(clock.now(), second);
    poll(&mut backend, None, &mut Vec::new());
    assert_eq!(clock.now(), second, "no timeout: back at once, no time passes");
    net.set_time_limit(Some(2_500_000_000));
    for _ in 0..5 {
        poll(&mut backend, Some(second), &mut Vec::new());
    }
    assert_eq!(clock.now_nanos(), 2_500_000_000, "never past the limit");
    // Something to report: no waiting.
    net.set_time_limit(None);
    net.connect_peer(addr(1)).unwrap();
    poll(&mut backend, Some(second), &mut Vec::new());
    assert_eq!(clock.now_nanos(), 2_500_000_000);
    clock.advance(Duration::from_millis(1));
    assert_eq!(net.clock().now_nanos(), 2_501_000_000, "one shared clock");
    clock.set(5);
    assert_eq!(clock.now_nanos(), 5);
}

#[test]
fn wake_ups_from_other_threads_coalesce_into_one_woken() {
    let clock = VirtualClock::new();
    let (mut backend, _net) = MemBackend::new(clock.clone());
    let waker = backend.waker();
    std::thread::spawn(move || {
        waker.wake().unwrap();
        waker.wake().unwrap();
    })
    .join()
    .unwrap();
    let seen = poll(&mut backend, Some(Duration::from_secs(1)), &mut Vec::new());
    assert_eq!(seen, [Seen::Woken]);
    assert_eq!(clock.now_nanos(), 0, "woken: no waiting");
    assert!(poll(&mut backend, None, &mut Vec::new()).is_empty());
}

#[test]
fn closed_listeners_refuse_new_peers_and_close_the_backlog() {
    let (mut backend, net) = MemBackend::new(VirtualClock::new());
    let waiting = net.connect_peer(addr(1)).unwrap();
    backend.close_listeners();
    assert!(!net.is_listening());
    assert!(net.is_closed(waiting));
    let err = net.connect_peer(addr(2)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(poll(&mut backend, None, &mut Vec::new()).is_empty());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    backend.add_listener(listener).unwrap();
    assert!(net.connect_peer(addr(2)).is_ok(), "listening again");
}

#[test]
fn counts_what_an_epoll_backend_would_call() {
    let (mut backend, net, peer) = open(Token(0));
    net.write(peer, b"in");
    poll(&mut backend, None, &mut Vec::new());
    backend.send(Token(0), &[IoSlice::new(b"out")]).unwrap();
    backend.remove_stream(Token(0));
    let counts = backend.syscalls();
    let want = SyscallCounts { waits: 2, reads: 1, writes: 1, accepts: 1, other: 2 };
    assert_eq!(counts, want);
}

/// One scripted session; returns every completion and what the peers read.
fn session() -> (Vec<Seen>, Vec<Vec<u8>>, u64) {
    let clock = VirtualClock::new();
    let (mut backend, net) = MemBackend::new(clock.clone());
    net.set_chunk_size(3);
    let mut accepted = Vec::new();
    let peers: Vec<PeerId> = (0..3).map(|i| net.connect_peer(addr(i)).unwrap()).collect();
    let mut seen = poll(&mut backend, None, &mut accepted);
    for (i, stream) in accepted.drain(..).enumerate() {
        backend.add_stream(Token(i), stream).unwrap();
    }
    for (i, &peer) in peers.iter().enumerate() {
        net.write(peer, &vec![i as u8; 5 + i]);
        net.set_write_budget(peer, Some(i));
    }
    net.reset(peers[1]);
    for round in 0..4 {
        seen.extend(poll(&mut backend, Some(Duration::from_millis(10)), &mut accepted));
        for i in 0..3 {
            let _ = backend.send(Token(i), &[IoSlice::new(&[round; 2])]);
        }
    }
    (seen, peers.iter().map(|&p| net.read(p)).collect(), clock.now_nanos())
}

#[test]
fn the_driver_side_crosses_threads() {
    fn shared<T: Send + Sync + Clone + 'static>(_: &T) {}
    let (backend, net) = MemBackend::new(VirtualClock::new());
    shared(&net);
    shared(net.clock());
    shared(&backend.waker());
    let peer = net.connect_peer(addr(1)).unwrap();
    let writer = net.clone();
    assert!(std::thread::spawn(move || writer.write(peer, b"x")).join().unwrap());
    assert_eq!(net.queued(), 1, "the accept; the bytes wait for the stream");
}

#[test]
fn the_same_operations_give_the_same_completions() {
    let first = session();
    assert_eq!(first, session());
    assert!(first.0.len() > 8, "the session did something: {:?}", first.0);
}
