//! Per-connection send queues, flushed with one gathered write per socket per loop turn.
//!
//! Small frames are copied back to back into owned buffers; large or shared payloads (a
//! broadcast frame, a [`Bytes`] the application hands over) are queued by reference, so one
//! encoded frame can sit in thousands of queues. An idle connection's queue is one `None`:
//! its storage returns to the worker's [`Pool`] as soon as it drains, and comes back from the
//! pool, capacity intact, for the next send — no allocation in the steady state.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Most slices gathered into one write.
pub(crate) const MAX_IOV: usize = 64;
/// Payloads at least this long are queued by reference when they are shared, not copied.
pub(crate) const SHARE_THRESHOLD: usize = 1024;
/// Owned buffers grow up to this before a new one is started.
const OWNED_CHUNK: usize = 64 << 10;

#[derive(Debug)]
enum Seg {
    Owned(Vec<u8>),
    Shared(Bytes),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(b) => b,
        }
    }
}

/// The storage of a non-empty queue.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already written.
    /// INVARIANT: `front_written < segs[0].len()` when `segs` is non-empty, else 0.
    front_written: usize,
    /// Bytes queued and not yet written.
    /// INVARIANT: the sum of segment lengths minus `front_written`.
    len: usize,
    /// Of `len`, the bytes at the front that are TLS records (the rest is plaintext still to
    /// encrypt); 0 on a connection without TLS.
    /// INVARIANT: `sealed <= len`, and it ends where a segment ends.
    sealed: usize,
    /// Spare owned buffers (capacity kept) for this chain's next copies.
    spare: Vec<Vec<u8>>,
}

/// Recycled chains, per worker.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    // Boxed: a chain moves between a queue's `Option<Box<Chain>>` and the pool by pointer.
    #[allow(clippy::vec_box)]
    chains: Vec<Box<Chain>>,
}

impl Pool {
    /// Chains kept at most; more are freed.
    const MAX: usize = 4096;

    fn take(&mut self) -> Box<Chain> {
        self.chains.pop().unwrap_or_default()
    }

    fn give(&mut self, mut chain: Box<Chain>) {
        debug_assert_eq!(chain.len, 0);
        if self.chains.len() >= Self::MAX {
            return;
        }
        chain.segs.clear();
        chain.front_written = 0;
        chain.sealed = 0;
        // Keep a modest amount of capacity; a burst's large buffers are not hoarded.
        chain.spare.retain(|v| v.capacity() <= OWNED_CHUNK);
        chain.spare.truncate(2);
        if chain.segs.capacity() > 64 {
            chain.segs = VecDeque::new();
        }
        self.chains.push(chain);
    }
}

/// A connection's send queue.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chain: Option<Box<Chain>>,
}

impl OutQueue {
    /// Bytes queued and not yet written.
    pub(crate) fn len(&self) -> usize {
        self.chain.as_ref().map_or(0, |c| c.len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chain.is_none()
    }

    fn chain(&mut self, pool: &mut Pool) -> &mut Chain {
        self.chain.get_or_insert_with(|| pool.take())
    }

    /// Copies `bytes` to the end of the queue.
    pub(crate) fn push_copy(&mut self, pool: &mut Pool, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let chain = self.chain(pool);
        // Plaintext never joins a segment of TLS records.
        let joinable = chain.sealed == 0 || chain.sealed < chain.len;
        chain.len += bytes.len();
        if joinable
            && let Some(Seg::Owned(last)) = chain.segs.back_mut()
            && (last.len() + bytes.len() <= last.capacity()
                || last.len() + bytes.len() <= OWNED_CHUNK)
        {
            last.extend_from_slice(bytes);
            return;
        }
        let mut buf = chain.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        chain.segs.push_back(Seg::Owned(buf));
    }

    /// Copies `bytes` to the end of the queue, masked with `key` (a client's frame payload).
    pub(crate) fn push_masked(&mut self, pool: &mut Pool, bytes: &[u8], key: [u8; 4]) {
        self.push_copy(pool, bytes);
        if let Some(chain) = self.chain.as_mut()
            && let Some(Seg::Owned(last)) = chain.segs.back_mut()
        {
            let end = last.len();
            bidir_protocol::frame::mask::apply_mask(&mut last[end - bytes.len()..], key, 0);
        }
    }

    /// Appends `bytes` by reference.
    pub(crate) fn push_shared(&mut self, pool: &mut Pool, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let chain = self.chain(pool);
        chain.len += bytes.len();
        chain.segs.push_back(Seg::Shared(bytes));
    }

    /// Bytes to write: all of them, or with `sealed_only` (TLS) the records at the front.
    pub(crate) fn unsent(&self, sealed_only: bool) -> usize {
        self.chain.as_ref().map_or(0, |c| if sealed_only { c.sealed } else { c.len })
    }

    /// Fills `out` with the unwritten bytes as slices, in order, or with `sealed_only` (TLS)
    /// the records at the front; returns how many it filled (at most `out.len()`).
    pub(crate) fn slices<'a>(&'a self, out: &mut [IoSlice<'a>], sealed_only: bool) -> usize {
        let Some(chain) = &self.chain else { return 0 };
        let limit = if sealed_only { chain.sealed } else { chain.len };
        let mut n = 0;
        let mut covered = 0;
        for (slot, seg) in out.iter_mut().zip(chain.segs.iter()) {
            if covered >= limit {
                break;
            }
            let bytes = seg.bytes();
            let bytes = if n == 0 { &bytes[chain.front_written..] } else { bytes };
            *slot = IoSlice::new(bytes);
            covered += bytes.len();
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes, which were written. Returns the queue to the pool when it
    /// empties.
    ///
    /// # Panics
    ///
    /// If `n` exceeds [`OutQueue::len`].
    pub(crate) fn consume(&mut self, pool: &mut Pool, mut n: usize) {
        let Some(chain) = self.chain.as_mut() else {
            assert_eq!(n, 0, "consumed bytes that were never queued");
            return;
        };
        assert!(n <= chain.len, "consumed more than queued");
        chain.len -= n;
        chain.sealed = chain.sealed.saturating_sub(n);
        while n > 0 {
            let front = chain.segs.front().expect("bytes left imply a segment").bytes().len();
            let left = front - chain.front_written;
            if n < left {
                chain.front_written += n;
                break;
            }
            n -= left;
            chain.front_written = 0;
            if let Some(Seg::Owned(v)) = chain.segs.pop_front()
                && v.capacity() <= OWNED_CHUNK
                && chain.spare.len() < 2
            {
                chain.spare.push(v);
            }
        }
        if chain.len == 0 {
            let chain = self.chain.take().expect("checked above");
            pool.give(chain);
        }
    }

    /// The queue's only buffer, when the queue is one owned buffer with nothing of it written
    /// yet (and, with `sealed_only`, all of it TLS records): a backend that takes buffers ([`bidir_sys::Backend::send_owned`]) may swap it for
    /// an empty one, then [`OutQueue::handed_over`] settles the queue.
    pub(crate) fn sole_owned(&mut self, sealed_only: bool) -> Option<&mut Vec<u8>> {
        let chain = self.chain.as_mut()?;
        let whole = !sealed_only || chain.sealed == chain.len;
        if chain.segs.len() != 1 || chain.front_written != 0 || !whole {
            return None;
        }
        match chain.segs.front_mut() {
            Some(Seg::Owned(v)) => Some(v),
            _ => None,
        }
    }

    /// The buffer from [`OutQueue::sole_owned`] was taken whole and an empty one put in its
    /// place: the queue is empty now (the empty buffer is kept as a spare if it has capacity).
    pub(crate) fn handed_over(&mut self, pool: &mut Pool) {
        let Some(mut chain) = self.chain.take() else { return };
        debug_assert!(
            chain.segs.len() == 1
                && matches!(chain.segs.front(), Some(Seg::Owned(v)) if v.is_empty())
        );
        if let Some(Seg::Owned(v)) = chain.segs.pop_front()
            && v.capacity() > 0
            && v.capacity() <= OWNED_CHUNK
            && chain.spare.len() < 2
        {
            chain.spare.push(v);
        }
        chain.len = 0;
        chain.front_written = 0;
        pool.give(chain);
    }

    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    /// Bytes queued and not yet encrypted (TLS): all of them on a connection without TLS.
    pub(crate) fn plain_len(&self) -> usize {
        self.chain.as_ref().map_or(0, |c| c.len - c.sealed)
    }

    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    /// Queues TLS records (a handshake message, an alert, `close_notify`) after the records
    /// already queued and before the plaintext not yet encrypted, which rustls will encrypt
    /// after them.
    pub(crate) fn push_sealed(&mut self, pool: &mut Pool, records: &[u8]) {
        if records.is_empty() {
            return;
        }
        let chain = self.chain(pool);
        // The sealed front ends where a segment ends: find that segment.
        let mut at = 0;
        let mut covered = 0;
        while covered < chain.sealed {
            let seg = chain.segs[at].bytes().len();
            covered += if at == 0 { seg - chain.front_written } else { seg };
            at += 1;
        }
        chain.segs.insert(at, Seg::Owned(records.to_vec()));
        chain.len += records.len();
        chain.sealed += records.len();
    }

    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    /// Encrypts the plaintext queued after the sealed front (TLS): `encrypt` appends each
    /// plaintext segment's records to one buffer, which replaces them. On an error the queue
    /// is left as it was.
    pub(crate) fn seal<E>(
        &mut self,
        mut encrypt: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(chain) = self.chain.as_mut() else { return Ok(()) };
        if chain.sealed == chain.len {
            return Ok(());
        }
        let mut first = 0;
        let mut covered = 0;
        while covered < chain.sealed {
            let seg = chain.segs[first].bytes().len();
            covered += if first == 0 { seg - chain.front_written } else { seg };
            first += 1;
        }
        let mut sealed = chain.spare.pop().unwrap_or_default();
        sealed.clear();
        for seg in chain.segs.range(first..) {
            // The front segment is never plaintext with some of it written.
            let bytes = if first == 0 { &seg.bytes()[chain.front_written..] } else { seg.bytes() };
            if let Err(e) = encrypt(bytes, &mut sealed) {
                chain.spare.push(sealed);
                return Err(e);
            }
        }
        for seg in chain.segs.drain(first..) {
            if let Seg::Owned(v) = seg
                && v.capacity() <= OWNED_CHUNK
                && chain.spare.len() < 2
            {
                chain.spare.push(v);
            }
        }
        if first == 0 {
            chain.front_written = 0;
        }
        chain.len = chain.sealed + sealed.len();
        chain.sealed = chain.len;
        chain.segs.push_back(Seg::Owned(sealed));
        Ok(())
    }

    /// Drops everything queued (the connection is gone).
    pub(crate) fn clear(&mut self, pool: &mut Pool) {
        if let Some(mut chain) = self.chain.take() {
            chain.len = 0;
            pool.give(chain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut OutQueue, pool: &mut Pool, step: usize) -> Vec<u8> {
        let mut out = vec![];
        while !q.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let filled = q.slices(&mut iov, false);
            let mut take = step;
            let mut n = 0;
            for s in &iov[..filled] {
                let k = s.len().min(take);
                out.extend_from_slice(&s[..k]);
                take -= k;
                n += k;
                if take == 0 {
                    break;
                }
            }
            q.consume(pool, n);
        }
        out
    }

    #[test]
    fn order_is_kept_across_copies_and_shares_and_partial_writes() {
        for step in [1usize, 3, 1000, usize::MAX] {
            let mut pool = Pool::default();
            let mut q = OutQueue::default();
            let mut expected: Vec<u8> = vec![];
            for i in 0..50u8 {
                let small = vec![i; (i as usize) % 7 + 1];
                q.push_copy(&mut pool, &small);
                expected.extend(&small);
                if i % 5 == 0 {
                    let big = Bytes::from(vec![i.wrapping_mul(3); 2000]);
                    q.push_shared(&mut pool, big.clone());
                    expected.extend(&big);
                }
            }
            assert_eq!(q.len(), expected.len());
            assert_eq!(drain(&mut q, &mut pool, step), expected, "step {step}");
            assert_eq!(q.len(), 0);
            assert!(q.is_empty());
            assert_eq!(pool.chains.len(), 1, "the chain went back to the pool");
        }
    }

    #[test]
    fn slices_are_capped_and_resume_after_the_cap() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        for i in 0..200u8 {
            q.push_shared(&mut pool, Bytes::from(vec![i; 2]));
        }
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        assert_eq!(q.slices(&mut iov, false), MAX_IOV);
        let out = drain(&mut q, &mut pool, usize::MAX);
        assert_eq!(out.len(), 400);
        assert_eq!(&out[398..], &[199, 199]);
    }

    #[test]
    fn steady_state_reuses_storage() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_copy(&mut pool, b"warm up");
        drain(&mut q, &mut pool, usize::MAX);
        let chain_ptr = &**pool.chains.last().unwrap() as *const Chain;
        q.push_copy(&mut pool, b"again");
        let reused = &**q.chain.as_ref().unwrap() as *const Chain;
        assert_eq!(chain_ptr, reused);
        let cap = match q.chain.as_ref().unwrap().segs.front() {
            Some(Seg::Owned(v)) => v.capacity(),
            _ => 0,
        };
        assert!(cap >= 7, "the owned buffer kept its capacity");
        q.clear(&mut pool);
        assert!(q.is_empty());
    }

    #[test]
    fn a_sole_owned_buffer_can_be_handed_over_whole() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_copy(&mut pool, b"one ");
        q.push_copy(&mut pool, b"two");
        let buf = q.sole_owned(false).expect("two small copies share one buffer");
        assert_eq!(buf.as_slice(), b"one two");
        let mut taken = Vec::with_capacity(64);
        std::mem::swap(buf, &mut taken);
        q.handed_over(&mut pool);
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        assert_eq!(taken, b"one two");
        // The swapped-in buffer is the next copy's storage.
        q.push_copy(&mut pool, b"three");
        assert!(q.sole_owned(false).unwrap().capacity() >= 64);
        // Not with a shared segment, nor once part of the buffer was written.
        q.push_shared(&mut pool, Bytes::from_static(b"shared"));
        assert!(q.sole_owned(false).is_none());
        q.clear(&mut pool);
        q.push_copy(&mut pool, b"four");
        q.consume(&mut pool, 1);
        assert!(q.sole_owned(false).is_none());
    }

    #[test]
    #[should_panic(expected = "consumed more than queued")]
    fn consuming_too_much_is_a_bug() {
        let mut pool = Pool::default();
        let mut q = OutQueue::default();
        q.push_copy(&mut pool, b"ab");
        q.consume(&mut pool, 3);
    }
}
