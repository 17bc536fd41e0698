//! Which bytes of one read request the server's chunks have described so far. The
//! protocol forbids overlapping chunks and a successful reply must cover every byte;
//! counting bytes alone would let an overlap hide a gap, so the spans are kept.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(crate) struct Coverage {
    /// Disjoint, non-adjacent spans: start -> end (exclusive), relative to the request.
    spans: BTreeMap<u64, u64>,
    total: u64,
}

impl Coverage {
    /// Records `start..end`; `false` (and nothing recorded) if it overlaps a recorded span.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> bool {
        if end <= start {
            return false;
        }
        let before = self
            .spans
            .range(..=start)
            .next_back()
            .map(|(&s, &e)| (s, e));
        let after = self.spans.range(start..).next().map(|(&s, &e)| (s, e));
        if before.is_some_and(|(_, e)| e > start) || after.is_some_and(|(s, _)| s < end) {
            return false;
        }
        // Merge with touching neighbours so the map stays small for in-order replies.
        let mut new_start = start;
        let mut new_end = end;
        if let Some((s, _)) = before.filter(|&(_, e)| e == start) {
            self.spans.remove(&s);
            new_start = s;
        }
        if let Some((s, e)) = after.filter(|&(s, _)| s == end) {
            self.spans.remove(&s);
            new_end = e;
        }
        self.spans.insert(new_start, new_end);
        self.total += end - start;
        true
    }

    /// Bytes covered.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overlaps_are_refused_and_touching_spans_merge() {
        let mut c = Coverage::default();
        assert!(c.insert(10, 20));
        assert!(!c.insert(15, 25));
        assert!(!c.insert(5, 11));
        assert!(!c.insert(10, 20));
        assert!(!c.insert(12, 13));
        assert!(!c.insert(0, 100));
        assert!(!c.insert(7, 7), "empty span");
        assert!(c.insert(20, 30));
        assert!(c.insert(0, 10));
        assert_eq!(c.spans.len(), 1);
        assert_eq!(c.total(), 30);
        assert!(c.insert(40, 50));
        assert!(!c.insert(29, 41));
        assert!(c.insert(30, 40));
        assert_eq!(c.spans.into_iter().collect::<Vec<_>>(), vec![(0, 50)]);
    }

    proptest! {
        // The spans accepted never share a byte, and the total is the union's size.
        #[test]
        fn matches_a_byte_map(spans in proptest::collection::vec((0u64..64, 1u64..16), 0..40)) {
            let mut c = Coverage::default();
            let mut bytes = [false; 80];
            for (start, len) in spans {
                let end = start + len;
                let free = bytes[start as usize..end as usize].iter().all(|b| !b);
                prop_assert_eq!(c.insert(start, end), free);
                if free {
                    bytes[start as usize..end as usize].fill(true);
                }
            }
            prop_assert_eq!(c.total(), bytes.iter().filter(|b| **b).count() as u64);
        }
    }
}
