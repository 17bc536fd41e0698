//! The set of allocated guest clusters: one bit per cluster of the virtual disk, so its size
//! depends on the virtual size alone (4 MiB for 2 TiB in 64 KiB clusters), never on how
//! scattered the allocation is.

/// A fixed-size bitmap of guest cluster indexes, filled once in increasing order.
#[derive(Debug)]
pub(crate) struct ClusterSet {
    words: Vec<u64>,
}

impl ClusterSet {
    /// An empty set able to hold indexes `0..clusters`; `None` when the memory is not there.
    pub(crate) fn new(clusters: u64) -> Option<Self> {
        let words = usize::try_from(clusters.div_ceil(64)).ok()?;
        let mut storage = Vec::new();
        storage.try_reserve_exact(words).ok()?;
        storage.resize(words, 0);
        Some(ClusterSet { words: storage })
    }

    /// Bytes this set holds on to.
    pub(crate) fn memory(&self) -> usize {
        self.words.len() * size_of::<u64>()
    }

    /// Adds `index`, which the caller checked is below the capacity given to `new`.
    pub(crate) fn insert(&mut self, index: u64) {
        if let Some(word) = usize::try_from(index / 64)
            .ok()
            .and_then(|w| self.words.get_mut(w))
        {
            *word |= 1 << (index % 64);
        }
    }

    /// The indexes in the set, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words
            .iter()
            .enumerate()
            .filter(|(_, word)| **word != 0)
            .flat_map(|(w, &word)| SetBits { word }.map(move |bit| w as u64 * 64 + bit))
    }
}

/// The positions of the one bits of a word, lowest first.
struct SetBits {
    word: u64,
}

impl Iterator for SetBits {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.word == 0 {
            return None;
        }
        let bit = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some(u64::from(bit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_what_was_inserted_in_order() {
        let mut set = ClusterSet::new(200).unwrap();
        let wanted = [0, 1, 63, 64, 65, 127, 128, 199];
        for &i in &wanted {
            set.insert(i);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), wanted);
        assert_eq!(set.memory(), 4 * 8);
    }

    #[test]
    fn empty_set_is_empty() {
        let set = ClusterSet::new(0).unwrap();
        assert_eq!(set.iter().count(), 0);
        assert_eq!(set.memory(), 0);
    }
}
