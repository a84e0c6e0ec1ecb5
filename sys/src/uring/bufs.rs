//! The provided-buffer ring the io_uring backend's receives fill (see the parent module's
//! ownership rule).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring as Ring, cqueue, types};

use super::BGID;

/// `IOU_PBUF_RING_INC` (Linux 6.12): the kernel consumes a provided buffer piece by piece,
/// so small receives pack into one buffer instead of taking one each.
pub(super) const IOU_PBUF_RING_INC: u16 = 2;
/// Without incremental consumption, buffers are cut to at most this size: a small message
/// takes a whole buffer then, and more, smaller buffers go further.
pub(super) const PLAIN_BUFFER_SIZE: usize = 16 << 10;

/// The provided-buffer ring: `count` buffers of `size` bytes and the ring of entries that
/// offers them to the kernel.
///
/// With incremental consumption (`inc`), the kernel fills each buffer from where its last
/// receive into it ended and says whether it will use the buffer again
/// (`IORING_CQE_F_BUF_MORE`); completions arrive in the order the kernel consumed, so the
/// offset of each piece is the sum of the earlier pieces' lengths, kept in `offsets`. A buffer
/// goes back to the ring only after its last piece.
pub(super) struct BufRing {
    /// Page-aligned array of `count` entries; the kernel reads it.
    pub(super) ring: NonNull<types::BufRingEntry>,
    pub(super) ring_layout: Layout,
    /// `count * size` bytes; the kernel writes into the buffers it was offered.
    pub(super) bufs: NonNull<u8>,
    pub(super) bufs_layout: Layout,
    pub(super) count: u16,
    pub(super) size: usize,
    /// Our copy of the tail: entries offered so far.
    pub(super) tail: u16,
    /// Incremental consumption is on.
    pub(super) inc: bool,
    /// Per buffer: bytes of it the kernel has filled and we have seen (with `inc`).
    pub(super) offsets: Vec<u32>,
}

impl BufRing {
    pub(super) fn new(count: u16, size: usize) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad provided-buffer sizes"));
        }
        let ring_layout =
            Layout::from_size_align(usize::from(count) * size_of::<types::BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        let bufs_layout =
            Layout::from_size_align(usize::from(count) * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let ring = NonNull::new(unsafe { alloc_zeroed(ring_layout) }.cast::<types::BufRingEntry>());
        // SAFETY: as above.
        let bufs = NonNull::new(unsafe { alloc_zeroed(bufs_layout) });
        let (Some(ring), Some(bufs)) = (ring, bufs) else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let offsets = vec![0; usize::from(count)];
        let mut this = Self {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            count,
            size,
            tail: 0,
            inc: false,
            offsets,
        };
        for bid in 0..count {
            this.offer(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Registers this ring with `ring` as buffer group `BGID`, with `flags`.
    ///
    /// The memory must outlive the registration: `IoUring` keeps its `BufRing` in a field
    /// dropped after the ring's.
    pub(super) fn register(&self, ring: &Ring, flags: u16) -> io::Result<()> {
        // SAFETY: the entries live in `self.ring` until `self` is dropped, which the caller
        // orders after the io_uring instance (see above).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.ring.as_ptr() as u64,
                self.count,
                BGID,
                flags,
            )
        }
    }

    /// Writes buffer `bid` into the ring at our tail (not yet visible to the kernel).
    pub(super) fn offer(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, so the entry lies inside the ring allocation. The kernel
        // only reads entries between its head and the published tail; this one is past the
        // published tail until `publish`, so nobody else touches it now.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        // SAFETY: `bid < count`, so the buffer lies inside the allocation.
        let addr = unsafe { self.bufs.as_ptr().add(usize::from(bid) * self.size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the offered entries visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field, inside the ring
        // allocation; it is a u16 the kernel reads and only we write; the release store
        // orders the entries written by `offer` before it.
        let tail = unsafe { &*types::BufRingEntry::tail(self.ring.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Accounts for a completion that names buffer `bid` with `len` bytes: returns where in
    /// the buffer those bytes start and whether the kernel is done with the buffer (it may go
    /// back to the ring once the bytes are handled). A `bid` out of range (which the kernel
    /// never names) is never done.
    pub(super) fn consume(&mut self, bid: u16, len: usize, flags: u32) -> (usize, bool) {
        let Some(offset) = self.offsets.get_mut(usize::from(bid)) else { return (0, false) };
        if !self.inc {
            return (0, true);
        }
        let at = *offset as usize;
        if cqueue::buffer_more(flags) {
            *offset = (at + len).min(self.size) as u32;
            (at, false)
        } else {
            *offset = 0;
            (at, true)
        }
    }

    /// The `len` bytes the kernel put in buffer `bid` from `offset` on.
    ///
    /// # Safety
    ///
    /// A completion named `bid` with these bytes (placed by [`BufRing::consume`]) and the
    /// buffer was not given back since: the kernel is done with this range (it only writes
    /// past it, or nowhere) and no other reference to it exists.
    pub(super) unsafe fn filled(&mut self, bid: u16, offset: usize, len: usize) -> &mut [u8] {
        debug_assert!(bid < self.count && offset + len <= self.size);
        let offset = offset.min(self.size);
        let len = len.min(self.size - offset);
        // SAFETY: the range lies inside buffer `bid`, inside the allocation; per the
        // function's contract it is ours alone until the buffer is given back.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.as_ptr().add(usize::from(bid) * self.size + offset),
                len,
            )
        }
    }

    /// Returns buffer `bid` to the kernel (visible at the next `publish`).
    pub(super) fn give_back(&mut self, bid: u16) {
        if bid < self.count {
            self.offer(bid);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring was unregistered (or the
        // io_uring instance closed) before: `IoUring` drops its ring first.
        unsafe {
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}
