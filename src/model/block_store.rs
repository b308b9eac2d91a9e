//! Where a loaded model's quantized weights live: a few large allocations shared by all of them,
//! instead of one allocation each.
//!
//! Why: a MoE layer's experts are many matrices of a megabyte or two (DeepSeek-V2-Lite at q4_0:
//! 26 layers × 64 experts × 3 of 1.6 MB each), and the allocator serves each such request from
//! its size classes, rounding it up. Measured with mimalloc (the process allocator), 4 992
//! buffers of 1.6 MB (8.10 GB) held 8.84 GB resident; the same bytes as 26 buffers, 8.15 GB.
//! Here the loader copies each quantized matrix into the current [`CHUNK`]-byte chunk, in order;
//! what is wasted is the unwritten tail of a chunk, which is never touched and so never resident.
//! A chunk is freed when the last weight in it is dropped.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

/// Bytes per shared chunk. Matrices above a quarter of it get a chunk of their own size.
const CHUNK: usize = 256 << 20;

/// The bytes of one quantized matrix: its own buffer (built by hand, in tests) or a slice of a
/// [`BlockStore`]'s chunk (loaded models).
pub enum WeightBytes {
    Own(Vec<u8>),
    Shared {
        chunk: Arc<Chunk>,
        start: usize,
        len: usize,
    },
}

impl Deref for WeightBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Own(v) => v,
            // SAFETY: `start..start + len` lies inside the chunk (see `BlockStore::keep`), was
            // written before this value existed, and is never written again.
            Self::Shared { chunk, start, len } => unsafe {
                std::slice::from_raw_parts(chunk.ptr.as_ptr().add(*start), *len)
            },
        }
    }
}

/// One large allocation that several [`WeightBytes`] read disjoint parts of.
pub struct Chunk {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Chunk {
    fn new(size: usize) -> Arc<Self> {
        let layout = Layout::from_size_align(size, 64).expect("a chunk size below isize::MAX");
        // SAFETY: `size` is non-zero (callers store non-empty matrices only).
        let ptr = unsafe { alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| handle_alloc_error(layout));
        Arc::new(Self { ptr, layout })
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, and no WeightBytes outlives the Arc.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: the bytes are written once, by `BlockStore::keep` before any reader can see them, and
// only read afterwards, from any thread.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

/// The chunks one model load fills. Dropped after the load: its weights keep their chunks alive.
#[derive(Default)]
pub struct BlockStore {
    /// The chunk being filled and the bytes of it used so far.
    current: RefCell<Option<(Arc<Chunk>, usize)>>,
}

impl BlockStore {
    /// `bytes` copied into a chunk (a new one when the current one is too full).
    pub fn keep(&self, bytes: &[u8]) -> WeightBytes {
        let len = bytes.len();
        if len == 0 {
            return WeightBytes::Own(Vec::new());
        }
        let mut current = self.current.borrow_mut();
        let (chunk, start) = if len > CHUNK / 4 {
            (Chunk::new(len), 0)
        } else {
            // Each matrix starts on a cache line, as a fresh allocation would.
            let fits = |(c, used): &(Arc<Chunk>, usize)| {
                used.next_multiple_of(64) + len <= c.layout.size()
            };
            if !current.as_ref().is_some_and(fits) {
                *current = Some((Chunk::new(CHUNK), 0));
            }
            let (c, used) = current.as_mut().expect("set just now");
            let start = used.next_multiple_of(64);
            *used = start + len;
            (c.clone(), start)
        };
        // SAFETY: `start..start + len` lies inside the chunk and no WeightBytes covers it yet
        // (each `keep` takes bytes after the last one's); the source is a different allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), chunk.ptr.as_ptr().add(start), len);
        }
        WeightBytes::Shared { chunk, start, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many matrices share few chunks, each reads back its own bytes, and a large one gets a
    /// chunk of its own.
    #[test]
    fn matrices_share_chunks_and_keep_their_bytes() {
        let store = BlockStore::default();
        let matrix =
            |i: usize, len: usize| (0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>();
        let len = 1_622_016; // one V2-Lite expert projection at q4_0
        let kept: Vec<WeightBytes> = (0..400).map(|i| store.keep(&matrix(i, len))).collect();
        let mut chunks: Vec<*const Chunk> = kept
            .iter()
            .map(|w| match w {
                WeightBytes::Shared { chunk, .. } => Arc::as_ptr(chunk),
                WeightBytes::Own(_) => panic!("a loaded matrix in its own buffer"),
            })
            .collect();
        chunks.dedup();
        assert_eq!(chunks.len(), (400 * len).div_ceil(CHUNK - CHUNK % len));
        for (i, w) in kept.iter().enumerate() {
            assert!(**w == matrix(i, len)[..], "matrix {i}");
        }
        let big = store.keep(&matrix(7, CHUNK / 2));
        assert!(
            matches!(&big, WeightBytes::Shared { chunk, .. } if chunk.layout.size() == CHUNK / 2)
        );
        assert!(*big == matrix(7, CHUNK / 2)[..]);
        assert!(store.keep(&[]).is_empty());
    }
}
