//! The calls and their replies between the server and a worker, through
//! shared memory: one memory file mapped by both, a ring of calls (server
//! to worker) and a ring of replies (worker to server), each woken through
//! an eventfd only when its reader sleeps.
//!
//! Why: through the socket pair, each call cost the server a write, the
//! worker a read and a write, the server a read, and a wake-up of a task
//! on each side: about 6 µs of CPU per call on the 2-core machine
//! (docs/benchmarks.md). Through the rings, a busy worker takes calls and
//! the server takes replies without a system call; a wake-up is written
//! only to a side that went to sleep, so under load many calls share one.
//!
//! What stays on the socket: the start-up conversation, configuration,
//! a plugin's questions and their answers, the jail's last word, the end
//! of the channel, and any call or reply that does not fit its ring at
//! the moment (so that neither side ever waits for the other's room).
//!
//! The server trusts nothing the worker writes: it keeps its own copy of
//! the positions it owns (where its calls end, how far it has read the
//! replies), reads the worker's positions once per use, and a length or
//! position that cannot be (more than was written, past the ring, a frame
//! that does not fit) ends the worker, like garbage on the socket. All
//! indexing is modulo the ring's size, whatever the positions say.
//!
//! Each ring is a header of three words on their own cache lines (`head`,
//! how far the reader has read; `tail`, how far the writer has written;
//! `sleeping`, whether the reader waits for a wake-up) and the data. One
//! writer and one reader per ring: each side serializes its own writers.
//! Frames are the socket's ([`super::frame`]): a 4-byte length, then the
//! body; a frame may wrap around the end of the data.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::{
        atomic::{fence, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
};

use thiserror::Error;

/// Bytes of each ring's data: a power of two.
pub(crate) const RING_BYTES: usize = 1 << 20;
/// Bytes of a ring's header.
const HEADER: usize = 192;
const HEAD_AT: usize = 0;
const TAIL_AT: usize = 64;
const SLEEPING_AT: usize = 128;
/// Bytes of the reading side's buffer kept between frames.
const KEPT_BODY: usize = 64 * 1024;
/// A frame larger than this goes through the socket.
pub(crate) const MAX_RING_FRAME: usize = RING_BYTES / 4;

/// The memory file's size: the calls' ring, then the replies'.
pub(crate) const SHARED_BYTES: usize = 2 * (HEADER + RING_BYTES);

/// What the reader of a ring found that no writer following the rules
/// writes: the worker is ended.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum Garbage {
    #[error("the replies' ring says more was written than it holds")]
    Overrun,
    #[error("a frame in the replies' ring is cut short or longer than the ring")]
    BadLength,
}

/// The memory both processes map.
pub(crate) struct Shared {
    base: NonNull<u8>,
}

// SAFETY: the mapping is plain memory; every access to the words is
// atomic and the data is copied in and out under the ring protocol.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// A new memory file for the rings, and its mapping. The file goes to
    /// the worker; the server keeps the mapping.
    pub(crate) fn create() -> io::Result<(Arc<Shared>, OwnedFd)> {
        // SAFETY: memfd_create reads the name; the descriptor is ours.
        let fd = unsafe {
            let fd = libc::memfd_create(c"rohrpost-rings".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: ftruncate on a descriptor this process owns.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), SHARED_BYTES as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let shared = Shared::map(fd.as_raw_fd())?;
        Ok((Arc::new(shared), fd))
    }

    /// Maps the memory file open as `fd` (the worker's side).
    pub(crate) fn map(fd: RawFd) -> io::Result<Shared> {
        // SAFETY: a fresh shared mapping of the whole file; no existing
        // memory is affected.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SHARED_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(at.cast())
            .map(|base| Shared { base })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    /// The ring of calls, server to worker.
    pub(crate) fn calls(self: &Arc<Self>) -> Ring {
        Ring::at(self, 0)
    }

    /// The ring of replies, worker to server.
    pub(crate) fn replies(self: &Arc<Self>) -> Ring {
        Ring::at(self, HEADER + RING_BYTES)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, no longer used.
        unsafe { libc::munmap(self.base.as_ptr().cast(), SHARED_BYTES) };
    }
}

/// One ring in the shared memory, which it keeps mapped.
#[derive(Clone)]
pub(crate) struct Ring {
    header: *mut u8,
    data: *mut u8,
    _shared: Arc<Shared>,
}

// SAFETY: as for `Shared`.
unsafe impl Send for Ring {}
unsafe impl Sync for Ring {}

impl Ring {
    fn at(shared: &Arc<Shared>, offset: usize) -> Self {
        // SAFETY: both offsets are inside the mapping of SHARED_BYTES.
        let header = unsafe { shared.base.as_ptr().add(offset) };
        Ring {
            header,
            data: unsafe { header.add(HEADER) },
            _shared: shared.clone(),
        }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: page-aligned mapping, 64-byte aligned offsets, inside
        // the header; shared memory is only ever accessed atomically here.
        unsafe { &*self.header.add(at).cast::<AtomicU64>() }
    }

    fn head(&self) -> &AtomicU64 {
        self.word64(HEAD_AT)
    }

    fn tail(&self) -> &AtomicU64 {
        self.word64(TAIL_AT)
    }

    fn sleeping(&self) -> &AtomicU32 {
        // SAFETY: as in `word64`.
        unsafe { &*self.header.add(SLEEPING_AT).cast::<AtomicU32>() }
    }

    /// Copies `bytes` into the data at position `at`, wrapping.
    fn write_at(&self, at: u64, bytes: &[u8]) {
        let start = (at as usize) & (RING_BYTES - 1);
        let first = bytes.len().min(RING_BYTES - start);
        // SAFETY: both copies stay inside the data (start < RING_BYTES,
        // first <= RING_BYTES - start, the rest < RING_BYTES).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.add(start), first);
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(first),
                self.data,
                bytes.len() - first,
            );
        }
    }

    /// Copies the data at position `at` into `out`, wrapping.
    fn read_at(&self, at: u64, out: &mut [u8]) {
        let start = (at as usize) & (RING_BYTES - 1);
        let first = out.len().min(RING_BYTES - start);
        // SAFETY: as in `write_at`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data,
                out.as_mut_ptr().add(first),
                out.len() - first,
            );
        }
    }
}

/// The writing end of a ring; one per ring, used under its side's lock.
pub(crate) struct Writer {
    ring: Ring,
    /// How far this side has written: its own count, never read back
    /// from the shared memory.
    tail: u64,
}

/// What became of a frame offered to a ring.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// In the ring; the reader is awake, or another push woke it already.
    Done,
    /// In the ring; the reader sleeps and this push is the first since: wake it.
    Wake,
    /// No room (or too large): send it through the socket.
    Full,
}

impl Writer {
    pub(crate) fn new(ring: Ring) -> Self {
        let tail = ring.tail().load(Ordering::Relaxed);
        Writer { ring, tail }
    }

    /// Puts one whole frame (its 4-byte length first) in the ring.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Pushed {
        if frame.len() > MAX_RING_FRAME {
            return Pushed::Full;
        }
        // The reader's position may be anything (the other process wrote
        // it): anything but a position between what this side wrote a
        // ring ago and now reads as no room.
        let head = self.ring.head().load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > RING_BYTES as u64 || RING_BYTES as u64 - used < frame.len() as u64 {
            return Pushed::Full;
        }
        self.ring.write_at(self.tail, frame);
        self.tail = self.tail.wrapping_add(frame.len() as u64);
        self.ring.tail().store(self.tail, Ordering::Release);
        // Paired with the reader's fence between setting `sleeping` and
        // looking at `tail` once more: one of the two sees the other.
        fence(Ordering::SeqCst);
        // Taking the flag makes this push the only one that wakes the
        // reader: the frames pushed before it runs again ring no bell.
        if self.ring.sleeping().load(Ordering::Relaxed) != 0
            && self.ring.sleeping().swap(0, Ordering::SeqCst) != 0
        {
            Pushed::Wake
        } else {
            Pushed::Done
        }
    }
}

/// The reading end of a ring; one per ring.
pub(crate) struct Reader {
    ring: Ring,
    /// How far this side has read: its own count.
    head: u64,
    /// The last frame popped: one buffer for all of them.
    body: Vec<u8>,
}

impl Reader {
    pub(crate) fn new(ring: Ring) -> Self {
        let head = ring.head().load(Ordering::Relaxed);
        Reader {
            ring,
            head,
            body: Vec::new(),
        }
    }

    /// The next frame's body (tag first), if one is there; lent until the
    /// next pop.
    pub(crate) fn pop(&mut self) -> Result<Option<&[u8]>, Garbage> {
        let tail = self.ring.tail().load(Ordering::Acquire);
        let available = tail.wrapping_sub(self.head);
        if available == 0 {
            return Ok(None);
        }
        if available > RING_BYTES as u64 {
            return Err(Garbage::Overrun);
        }
        let mut head = [0u8; 4];
        if available < 4 {
            return Err(Garbage::BadLength);
        }
        self.ring.read_at(self.head, &mut head);
        let len = u32::from_le_bytes(head) as u64;
        if len == 0 || len > available - 4 || len > MAX_RING_FRAME as u64 {
            return Err(Garbage::BadLength);
        }
        self.body.clear();
        self.body.resize(len as usize, 0);
        self.ring.read_at(self.head.wrapping_add(4), &mut self.body);
        self.head = self.head.wrapping_add(4 + len);
        self.ring.head().store(self.head, Ordering::Release);
        // A rare large frame does not keep its buffer.
        if self.body.capacity() > KEPT_BODY && len as usize <= KEPT_BODY {
            self.body.shrink_to(KEPT_BODY);
        }
        Ok(Some(&self.body))
    }

    /// Whether a frame is waiting.
    pub(crate) fn has_more(&self) -> bool {
        self.ring.tail().load(Ordering::Acquire) != self.head
    }

    /// Says the reader is about to sleep; `false` (and awake again) when a
    /// frame came in meanwhile: read on instead of sleeping.
    pub(crate) fn sleep(&self) -> bool {
        self.ring.sleeping().store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.ring.tail().load(Ordering::Acquire) != self.head {
            self.wake();
            return false;
        }
        true
    }

    /// Says the reader is awake.
    pub(crate) fn wake(&self) {
        self.ring.sleeping().store(0, Ordering::Relaxed);
    }
}

/// Where a worker finds its rings: the memory file, the eventfd that
/// wakes it, the eventfd that wakes the server.
pub(crate) const SHARED_FD: RawFd = 5;
pub(crate) const TO_WORKER_FD: RawFd = 6;
pub(crate) const TO_HOST_FD: RawFd = 7;

/// The server's side of one worker's rings, made before the worker starts.
pub(crate) struct HostSide {
    /// The memory file and both eventfds, for the worker to inherit.
    pub memory: OwnedFd,
    pub to_worker: OwnedFd,
    pub to_host: OwnedFd,
    pub calls: Writer,
    pub replies: Reader,
}

impl HostSide {
    pub(crate) fn create() -> io::Result<HostSide> {
        let (shared, memory) = Shared::create()?;
        Ok(HostSide {
            memory,
            to_worker: eventfd()?,
            to_host: eventfd()?,
            calls: Writer::new(shared.calls()),
            replies: Reader::new(shared.replies()),
        })
    }
}

/// An eventfd: how a writer wakes a sleeping reader.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the descriptor is ours.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wakes the reader waiting on eventfd `fd`.
pub(crate) fn ring_bell(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a local buffer; a full counter (EAGAIN)
    // means a wake-up is pending anyway.
    unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
}

/// Takes the wake-ups pending on eventfd `fd` (none: fine).
pub(crate) fn take_bell(fd: RawFd) {
    let mut count = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a local buffer.
    unsafe { libc::read(fd, count.as_mut_ptr().cast(), count.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_go_round_the_ring_whole_and_in_order() {
        let (shared, fd) = Shared::create().expect("the memory");
        // The other process's mapping of the same file.
        let theirs = Arc::new(Shared::map(fd.as_raw_fd()).expect("a second mapping"));
        let mut writer = Writer::new(shared.calls());
        let mut reader = Reader::new(theirs.calls());
        let mut sent = 0u64;
        for round in 0..8000u32 {
            let body: Vec<u8> = (0..(round % 700 + 1)).map(|i| (i + round) as u8).collect();
            assert_ne!(writer.push(&frame(&body)), Pushed::Full, "round {round}");
            sent += 4 + body.len() as u64;
            assert_eq!(reader.pop(), Ok(Some(&body[..])));
        }
        assert!(sent > 2 * RING_BYTES as u64 / 2, "wrapped around");
        assert_eq!(reader.pop(), Ok(None));
    }

    #[test]
    fn a_full_ring_says_so_and_takes_frames_again_once_read() {
        let (shared, _fd) = Shared::create().expect("the memory");
        let mut writer = Writer::new(shared.replies());
        let mut reader = Reader::new(shared.replies());
        let big = frame(&vec![7u8; MAX_RING_FRAME - 4]);
        for _ in 0..4 {
            assert_ne!(writer.push(&big), Pushed::Full);
        }
        assert_eq!(writer.push(&frame(b"x")), Pushed::Full);
        assert_eq!(writer.push(&frame(&vec![0; MAX_RING_FRAME])), Pushed::Full);
        assert!(reader.pop().expect("fine").is_some());
        assert_ne!(writer.push(&frame(b"x")), Pushed::Full);
    }

    #[test]
    fn a_sleeping_reader_is_woken_and_a_late_frame_keeps_it_up() {
        let (shared, _fd) = Shared::create().expect("the memory");
        let mut writer = Writer::new(shared.calls());
        let reader = Reader::new(shared.calls());
        assert_eq!(writer.push(&frame(b"a")), Pushed::Done);
        assert!(!reader.sleep(), "a frame is waiting");
        let mut reader = reader;
        assert!(reader.pop().expect("fine").is_some());
        assert!(reader.sleep());
        assert_eq!(writer.push(&frame(b"b")), Pushed::Wake);
        // One bell per sleep: the reader has not run yet.
        assert_eq!(writer.push(&frame(b"b2")), Pushed::Done);
        reader.wake();
        assert_eq!(writer.push(&frame(b"c")), Pushed::Done);
    }

    #[test]
    fn garbage_from_the_other_side_is_caught_not_followed() {
        let (shared, _fd) = Shared::create().expect("the memory");
        let ring = shared.replies();
        let mut reader = Reader::new(ring.clone());
        // A tail far ahead of anything written.
        ring.tail().store(10 * RING_BYTES as u64, Ordering::Release);
        assert_eq!(reader.pop(), Err(Garbage::Overrun));
        // A length longer than what was written.
        ring.tail().store(8, Ordering::Release);
        ring.write_at(0, &1000u32.to_le_bytes());
        assert_eq!(reader.pop(), Err(Garbage::BadLength));
        // A length of zero.
        ring.write_at(0, &0u32.to_le_bytes());
        assert_eq!(reader.pop(), Err(Garbage::BadLength));
        // A writer whose reader claims a position it never reached finds
        // no room, and writes nothing.
        let mut writer = Writer::new(shared.calls());
        shared.calls().head().store(u64::MAX / 2, Ordering::Release);
        assert_eq!(writer.push(&frame(b"x")), Pushed::Full);
    }
}
