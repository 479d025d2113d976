//! Read and write buffers lent to connections only while they have bytes
//! in them.
//!
//! Why: an idle connection holding a 4 KiB read buffer costs 4 KiB times
//! the connections, and a busy one allocating a buffer per message costs
//! a malloc and a free per reply. Here a connection takes a buffer from
//! its thread's pool when its socket has something to read (or it has
//! something to write) and gives it back as soon as the buffer is empty
//! again: idle connections hold none, and under load the same few buffers
//! go round without touching the allocator.

use std::cell::RefCell;

/// Buffers kept per thread; more are freed when given back.
const KEPT: usize = 256;
/// A buffer grown past this (a large message) is freed, not kept.
const KEPT_CAPACITY: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let pooled = POOL.with(|pool| pool.borrow_mut().pop());
    match pooled {
        Some(mut buffer) => {
            buffer.reserve(capacity);
            buffer
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Gives `buffer` back, emptied.
pub(crate) fn give(mut buffer: Vec<u8>) {
    if buffer.capacity() > KEPT_CAPACITY || buffer.capacity() == 0 {
        return;
    }
    buffer.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT {
            pool.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_lent_again_empty() {
        let mut buffer = take(100);
        buffer.extend_from_slice(b"abc");
        let at = buffer.as_ptr();
        give(buffer);
        let again = take(10);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        give(again);
    }

    fn kept() -> usize {
        POOL.with(|pool| pool.borrow().len())
    }

    #[test]
    fn a_large_buffer_is_not_kept() {
        let before = kept();
        give(take(KEPT_CAPACITY + 1));
        assert_eq!(kept(), before);
        give(take(KEPT_CAPACITY));
        assert_eq!(kept(), before + 1);
    }
}
