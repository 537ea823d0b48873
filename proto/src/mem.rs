//! Heap bytes of the inline-when-short containers that legs and calls in
//! progress are made of, for the engine's memory budget.

use compact_str::CompactString;
use smallvec::{Array, SmallVec};

/// Heap bytes of a string held inline up to 24 bytes: 0 while inline.
pub(crate) fn str_heap(s: &CompactString) -> usize {
    if s.is_heap_allocated() {
        s.capacity()
    } else {
        0
    }
}

/// Heap bytes of a short list held inline: 0 until it spills.
pub(crate) fn vec_heap<A: Array>(v: &SmallVec<A>) -> usize {
    if v.spilled() {
        v.capacity() * std::mem::size_of::<A::Item>()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_costs_nothing_and_spilled_costs_its_capacity() {
        assert_eq!(str_heap(&CompactString::from("short")), 0);
        let long = CompactString::from("x".repeat(40));
        assert!(str_heap(&long) >= 40);
        let mut v: SmallVec<[u32; 2]> = SmallVec::new();
        v.extend([1, 2]);
        assert_eq!(vec_heap(&v), 0);
        v.push(3);
        assert_eq!(vec_heap(&v), v.capacity() * 4);
    }
}
