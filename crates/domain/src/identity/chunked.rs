//! A list that grows a chunk at a time, for the linker's per-record lists: its records (its
//! largest), and their cards, what is seen of them and their persons' faces.
//!
//! A `Vec` grows by doubling: each step allocates twice the room, copies everything over and
//! frees the old room. For the records (a few hundred bytes each, about 170,000 in the 1M
//! demo) a replay copied tens of megabytes and touched about twice the memory it kept, on
//! the applying thread, and new memory is slow to touch on a virtual machine (the kernel zeroes
//! each page, and the host backs it). Here full chunks never move: adding a record touches
//! only its own bytes, and reading one costs a shift and a mask more than a `Vec`.

use std::ops::{Index, IndexMut};

/// Items per chunk (a power of two, so an index splits with a shift and a mask).
const CHUNK: usize = 4096;

/// A list of `T` in chunks of [`CHUNK`]; every chunk but the last is full (so two lists with
/// the same items are equal).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new() }
    }
}

impl<T> Chunked<T> {
    /// How many items it holds.
    pub(super) fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    /// Adds `item` at the end.
    pub(super) fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
    }

    /// The items, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut list = Chunked::default();
        for item in items {
            list.push(item);
        }
        list
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// It holds what a `Vec` fed the same items holds, at the same places.
        #[test]
        fn it_holds_what_a_vec_holds(n in 0..3 * CHUNK + 10, changed in any::<prop::sample::Index>()) {
            let mut list: Chunked<usize> = (0..n).collect();
            let mut vec: Vec<usize> = (0..n).collect();
            if n > 0 {
                let i = changed.index(n);
                list[i] = usize::MAX;
                vec[i] = usize::MAX;
            }
            list.push(7);
            vec.push(7);
            prop_assert_eq!(list.len(), vec.len());
            prop_assert!(list.iter().eq(vec.iter()));
            for (i, v) in vec.iter().enumerate() {
                prop_assert_eq!(list[i], *v);
            }
        }
    }
}
