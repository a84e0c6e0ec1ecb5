//! The io_uring backend's completions: what each means for its streams, listeners and
//! buffers, and what the worker hears of it.

use super::*;

impl IoUring {
    /// Handles one completion; reports to `on` what the worker must hear of.
    pub(super) fn complete(
        &mut self,
        cqe: &cqueue::Entry,
        on: &mut impl FnMut(Completion<'_>),
        returned: &mut Vec<u16>,
    ) {
        let (op, slot, generation) = decode(cqe.user_data());
        let result = cqe.result();
        let more = cqueue::more(cqe.flags());
        match op {
            OP_WAKE => {
                self.waking = false;
                on(Completion::Woken);
            }
            OP_ACCEPT => {
                let Some(listener) = self.listeners.get_mut(slot) else { return };
                if !more {
                    listener.accepting = false;
                    self.rearm_accept = true;
                }
                if matches!(-result, libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) {
                    self.accept_backoff = true;
                }
                if result >= 0 {
                    // SAFETY: a successful accept completion carries a new descriptor that
                    // nobody else owns.
                    let stream = unsafe { TcpStream::from_raw_fd(result) };
                    self.counts.other += 1;
                    match stream.peer_addr() {
                        Ok(peer) => on(Completion::Accepted { stream, peer, listener: slot }),
                        Err(_) => drop(stream), // already gone
                    }
                }
            }
            OP_CANCEL => {}
            OP_RECV | OP_SEND | OP_CONNECT => {
                if op == OP_CONNECT {
                    // The kernel is done with the address, whoever the stream is now.
                    self.connecting.retain(|(s, g, _)| (*s, *g) != (slot, generation));
                }
                // A receive's buffer (or piece of one): where its bytes are, and back to the
                // ring after this batch once the kernel is done with it.
                let piece = cqueue::buffer_select(cqe.flags())
                    .filter(|&bid| bid < self.bufs.count)
                    .map(|bid| {
                        let len = usize::try_from(result).unwrap_or(0);
                        let (offset, finished) = self.bufs.consume(bid, len, cqe.flags());
                        if finished {
                            returned.push(bid);
                        }
                        (bid, offset)
                    });
                let live =
                    matches!(self.streams.get(slot), Some(Some(s)) if s.generation == generation);
                if !live {
                    // A retired stream's operation: finish a short send, count it down.
                    if op == OP_SEND && !cqueue::notif(cqe.flags()) && result > 0 {
                        self.continue_retired_send(slot, generation, result as usize);
                    }
                    // An operation's last completion has no MORE flag (a multishot receive
                    // before its end, a zero-copy send before its notification have it).
                    if !more {
                        self.retire_one(slot, generation);
                    }
                    return;
                }
                match op {
                    OP_RECV => self.on_recv(slot, result, more, piece, on),
                    OP_SEND => self.on_send(slot, result, cqe.flags(), on),
                    _ => self.on_connect(slot, result, on),
                }
            }
            _ => {}
        }
    }

    fn retire_one(&mut self, slot: usize, generation: u32) {
        if let Some(at) =
            self.retired.iter().position(|(s, r, ..)| *s == slot && r.generation == generation)
        {
            let stream = &mut self.retired[at].1;
            stream.in_flight = stream.in_flight.saturating_sub(1);
            if stream.in_flight == 0 {
                // Its last operation is done: closing the descriptor is safe now.
                self.counts.other += 1;
                self.retired.swap_remove(at);
            }
        }
    }

    /// A receive's completion; `piece` is the buffer and offset its bytes are at (already
    /// accounted for and, when finished, queued to go back after the batch).
    fn on_recv(
        &mut self,
        slot: usize,
        result: i32,
        more: bool,
        piece: Option<(u16, usize)>,
        on: &mut impl FnMut(Completion<'_>),
    ) {
        let token = Token(slot);
        let Some(Some(stream)) = self.streams.get_mut(slot) else { return };
        if !more {
            stream.receiving = false;
            stream.in_flight -= 1;
        }
        match result {
            n if n > 0 => {
                if let Some((bid, offset)) = piece
                    && !stream.done
                {
                    // SAFETY: the completion named `bid` and these bytes: the kernel filled
                    // them and is done with them; the buffer goes back to the ring only
                    // through `returned`, after the batch.
                    let data = unsafe { self.bufs.filled(bid, offset, n as usize) };
                    on(Completion::Received { token, data });
                }
                if !more && !stream.done {
                    self.rearm_recv.push(slot); // ended while data flowed (e.g. CQ overflow)
                }
            }
            0 => {
                if !stream.done {
                    stream.done = true;
                    on(Completion::Closed { token, error: None });
                }
            }
            e if -e == libc::ENOBUFS => {
                // The ring ran dry: re-arm once this batch's buffers are back.
                self.starved += 1;
                self.rearm_recv.push(slot);
            }
            e => {
                if !stream.done && -e != libc::ECANCELED {
                    stream.done = true;
                    on(Completion::Closed { token, error: Some(io::Error::from_raw_os_error(-e)) });
                }
            }
        }
    }

    /// A send's completion, or a zero-copy send's notification that the kernel let go of the
    /// buffer. The buffer is released when it is all sent and no notification is due.
    fn on_send(
        &mut self,
        slot: usize,
        result: i32,
        flags: u32,
        on: &mut impl FnMut(Completion<'_>),
    ) {
        let token = Token(slot);
        let Some(Some(stream)) = self.streams.get_mut(slot) else { return };
        let Some(sending) = &mut stream.send else { return };
        if cqueue::notif(flags) {
            stream.in_flight -= 1;
            sending.notifs -= 1;
        } else {
            if cqueue::more(flags) {
                sending.notifs += 1; // the notification ends the operation
            } else {
                stream.in_flight -= 1;
            }
            if result < 0 {
                sending.sent = sending.buf.len(); // nothing more goes out
                if !stream.done && -result != libc::ECANCELED {
                    stream.done = true;
                    on(Completion::Closed {
                        token,
                        error: Some(io::Error::from_raw_os_error(-result)),
                    });
                }
            } else if sending.advance(result as usize) {
                self.submit_send(slot); // a short send: the rest, in order
                return;
            }
        }
        let Some(Some(stream)) = self.streams.get_mut(slot) else { return };
        if !stream.send.as_ref().is_some_and(|s| s.finished()) {
            return;
        }
        let sending = stream.send.take().expect("checked above");
        let writable = std::mem::take(&mut stream.wants_writable) && !stream.done;
        self.recycle(sending);
        if writable {
            on(Completion::Writable { token });
        }
    }

    fn on_connect(&mut self, slot: usize, result: i32, on: &mut impl FnMut(Completion<'_>)) {
        let token = Token(slot);
        let Some(Some(stream)) = self.streams.get_mut(slot) else { return };
        stream.in_flight -= 1;
        stream.connecting = false;
        if result < 0 {
            stream.done = true;
            on(Completion::Connected { token, error: Some(io::Error::from_raw_os_error(-result)) });
            return;
        }
        on(Completion::Connected { token, error: None });
        self.arm_recv(slot);
    }
}
