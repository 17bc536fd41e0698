//! Byte ranges as the used-blocks readers return them: sorted, merged, clipped.

use std::ops::Range;

/// Collects ranges in any order and hands them back sorted, with overlapping or touching
/// ranges merged and everything clipped to `0..limit`.
pub(crate) struct RangeSet {
    ranges: Vec<Range<u64>>,
    limit: u64,
}

impl RangeSet {
    pub(crate) fn new(limit: u64) -> RangeSet {
        RangeSet {
            ranges: Vec::new(),
            limit,
        }
    }

    /// Adds `start..end`, clipped to the limit; empty ranges are dropped. Consecutive
    /// additions that touch are merged at once, which keeps bitmap scans compact.
    pub(crate) fn add(&mut self, start: u64, end: u64) {
        let end = end.min(self.limit);
        if start >= end {
            return;
        }
        if let Some(last) = self.ranges.last_mut()
            && last.end == start
        {
            last.end = end;
            return;
        }
        self.ranges.push(start..end);
    }

    pub(crate) fn into_sorted(mut self) -> Vec<Range<u64>> {
        self.ranges.sort_by_key(|r| r.start);
        let mut out: Vec<Range<u64>> = Vec::with_capacity(self.ranges.len());
        for range in self.ranges {
            match out.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => out.push(range),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_touching_ranges_and_clips() {
        let mut set = RangeSet::new(100);
        set.add(50, 60);
        set.add(0, 10);
        set.add(10, 20);
        set.add(55, 70);
        set.add(90, 200);
        set.add(30, 30);
        set.add(150, 160);
        assert_eq!(set.into_sorted(), vec![0..20, 50..70, 90..100]);
    }
}
