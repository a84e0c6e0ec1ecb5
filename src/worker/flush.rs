//! The flush at the end of each turn: one gathered write per connection with frames queued,
//! a whole-buffer hand-over where the backend takes buffers, and what follows a write —
//! pongs held back while the queue was full, `on_drain`, the end of a lingering slot.

use std::io::IoSlice;

use bidir_protocol::CloseCode;
use bidir_sys::{Backend, Token};

use super::Worker;
use super::slot::Phase;
use crate::client::ConnectError;
use crate::handler::CloseInfo;
use crate::outq::MAX_IOV;

impl<B: Backend> Worker<B> {
    /// One gathered write per connection with something queued.
    pub(super) fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.cx.dirty);
        for key in dirty {
            let Some(slot) = self.conns.slots.get_mut(key) else { continue };
            slot.meta.dirty = false;
            if matches!(slot.phase, Phase::Dead) || slot.meta.blocked {
                continue;
            }
            if self.write(key).is_err() {
                let error = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
                self.conns.fail_connect(&mut self.cx, key, ConnectError::Io(error));
                let info = CloseInfo::failed(CloseCode::ABNORMAL, "write failed");
                self.conns.report_close(&mut self.cx, key, info);
                self.conns.kill(&mut self.cx, key);
                continue;
            }
            self.after_write(key);
        }
    }

    /// Writes slot `key`'s queue until it is empty or the socket takes no more (the slot is
    /// then blocked until [`Completion::Writable`](bidir_sys::Completion::Writable)); `Err`
    /// when the write failed.
    fn write(&mut self, key: usize) -> Result<(), ()> {
        let slot = &mut self.conns.slots[key];
        // Over TLS, this turn's plaintext is encrypted in one go, and only records go out
        // (plaintext held before the handshake, or after the session broke, stays).
        let sealed_only = match &mut slot.tls {
            Some(tls) => {
                let close = matches!(slot.phase, Phase::Linger { .. });
                tls.seal(&mut slot.meta.out, &mut self.cx.pool, close).map_err(drop)?;
                true
            }
            None => false,
        };
        let meta = &mut slot.meta;
        while meta.out.unsent(sealed_only) > 0 {
            // One buffer: a backend that takes buffers gets it without a copy.
            if let Some(buf) = meta.out.sole_owned(sealed_only) {
                let len = buf.len() as u64;
                match self.backend.send_owned(Token(key), buf) {
                    Some(Ok(true)) => {
                        self.cx.counters.bytes_out += len;
                        meta.out.handed_over(&mut self.cx.pool);
                        continue;
                    }
                    Some(Ok(false)) => {
                        meta.blocked = true;
                        return Ok(());
                    }
                    Some(Err(_)) => return Err(()),
                    None => {}
                }
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = meta.out.slices(&mut iov, sealed_only);
            let queued: usize = iov[..n].iter().map(|s| s.len()).sum();
            match self.backend.send(Token(key), &iov[..n]) {
                Ok(written) => {
                    self.cx.counters.bytes_out += written as u64;
                    meta.out.consume(&mut self.cx.pool, written);
                    if written < queued {
                        meta.blocked = true;
                        return Ok(());
                    }
                }
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// After a write: pongs held back while the queue was full, the end of a lingering slot
    /// whose answer is out, `on_drain` once the queue fell below the drain threshold.
    fn after_write(&mut self, key: usize) {
        let config = self.cx.config();
        let (max_backpressure, drain_threshold) = (config.max_backpressure, config.drain_threshold);
        let slot = &mut self.conns.slots[key];
        slot.meta.share_queued();
        if let Phase::Open { conn, .. } = &mut slot.phase
            && conn.has_pending_pong()
            && slot.meta.out.len() < max_backpressure
        {
            // Pongs held back while the queue was full: written on the next turn.
            self.cx.transmit(conn, &mut slot.meta);
        }
        match &slot.phase {
            Phase::Linger { .. } if slot.meta.out.is_empty() => self.conns.kill(&mut self.cx, key),
            Phase::Open { .. }
                if slot.meta.above_drain && slot.meta.out.len() < drain_threshold =>
            {
                slot.meta.above_drain = false;
                self.conns.call(&mut self.cx, key, |h, cx| h.on_drain(cx));
                self.conns.settle(&mut self.cx, key);
            }
            _ => {}
        }
    }
}
