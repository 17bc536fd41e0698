//! Sorted, merged byte ranges: what an image backup reads (allocated ∩ used by the file
//! system), what changed since the previous backup (a dirty bitmap).

use std::ops::Range;

/// Byte ranges, sorted and non-overlapping, adjacent ones merged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ranges(Vec<Range<u64>>);

impl Ranges {
    /// The whole of `0..size`.
    pub fn all(size: u64) -> Self {
        Ranges::from_unsorted(std::iter::once(0..size).collect())
    }

    /// Normalises any list: sorts, drops empty ranges, merges overlapping and adjacent.
    pub fn from_unsorted(mut list: Vec<Range<u64>>) -> Self {
        list.retain(|r| r.start < r.end);
        list.sort_by_key(|r| r.start);
        let mut out: Vec<Range<u64>> = Vec::with_capacity(list.len());
        for r in list {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        Ranges(out)
    }

    /// The ranges.
    pub fn as_slice(&self) -> &[Range<u64>] {
        &self.0
    }

    /// Total bytes covered.
    pub fn len_bytes(&self) -> u64 {
        self.0.iter().map(|r| r.end - r.start).sum()
    }

    /// Bytes in both.
    pub fn intersect(&self, other: &Ranges) -> Ranges {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (&self.0[i], &other.0[j]);
            let start = a.start.max(b.start);
            let end = a.end.min(b.end);
            if start < end {
                out.push(start..end);
            }
            if a.end < b.end {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    /// Bytes in either.
    pub fn union(&self, other: &Ranges) -> Ranges {
        let mut all = self.0.clone();
        all.extend(other.0.iter().cloned());
        Ranges::from_unsorted(all)
    }

    /// Moves every range by `offset` (a partition's ranges into disk offsets).
    pub fn shifted(&self, offset: u64) -> Ranges {
        Ranges(
            self.0
                .iter()
                .map(|r| r.start + offset..r.end + offset)
                .collect(),
        )
    }

    /// `0..size` minus these ranges.
    pub fn complement(&self, size: u64) -> Ranges {
        let mut out = Vec::new();
        let mut pos = 0;
        for r in &self.0 {
            if r.start > pos {
                out.push(pos..r.start.min(size));
            }
            pos = pos.max(r.end);
        }
        if pos < size {
            out.push(pos..size);
        }
        Ranges::from_unsorted(out)
    }

    /// A cursor for questions asked with increasing offsets.
    pub fn cursor(&self) -> RangeCursor<'_> {
        RangeCursor {
            ranges: &self.0,
            next: 0,
        }
    }
}

/// Walks [`Ranges`] forward: each question starts at or after the previous one's start.
pub struct RangeCursor<'a> {
    ranges: &'a [Range<u64>],
    next: usize,
}

impl RangeCursor<'_> {
    /// The parts of `start..end` inside the ranges, relative to `start`.
    pub fn parts(&mut self, start: u64, end: u64) -> Vec<Range<u64>> {
        while self.next < self.ranges.len() && self.ranges[self.next].end <= start {
            self.next += 1;
        }
        let mut out = Vec::new();
        for r in &self.ranges[self.next..] {
            if r.start >= end {
                break;
            }
            out.push(r.start.max(start) - start..r.end.min(end) - start);
        }
        out
    }

    /// Whether any byte of `start..end` is inside the ranges.
    pub fn touches(&mut self, start: u64, end: u64) -> bool {
        !self.parts(start, end).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_intersect_union_complement() {
        let a = Ranges::from_unsorted(vec![10..20, 0..5, 4..8, 20..25, 30..30]);
        assert_eq!(a.as_slice(), &[0..8, 10..25]);
        let b = Ranges::from_unsorted(vec![6..12, 24..40]);
        assert_eq!(a.intersect(&b).as_slice(), &[6..8, 10..12, 24..25]);
        assert_eq!(a.union(&b).as_slice(), std::slice::from_ref(&(0..40)));
        assert_eq!(a.complement(30).as_slice(), &[8..10, 25..30]);
        assert_eq!(a.shifted(100).as_slice(), &[100..108, 110..125]);
        assert_eq!(a.len_bytes(), 23);
        assert_eq!(Ranges::all(0).as_slice(), &[] as &[Range<u64>]);
    }

    #[test]
    fn cursor_answers_increasing_questions() {
        let a = Ranges::from_unsorted(vec![5..10, 20..30]);
        let mut c = a.cursor();
        assert_eq!(c.parts(0, 4), vec![]);
        assert_eq!(c.parts(0, 8), vec![5..8]);
        assert_eq!(c.parts(8, 24), vec![0..2, 12..16]);
        assert!(!c.touches(10, 20));
        assert!(c.touches(29, 40));
        assert!(!c.touches(30, 40));
    }
}
