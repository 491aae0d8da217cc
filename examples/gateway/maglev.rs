//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).
//!
//! Each endpoint gets a permutation of the table's `M` slots from two hashes
//! of its name, `offset = h1 % M` and `skip = h2 % (M - 1) + 1` (`M` prime,
//! so every skip walks all slots). Endpoints take turns claiming the next
//! free slot of their permutation until the table is full, so every
//! endpoint owns `floor(M/N)` or `ceil(M/N)` slots, and removing one
//! endpoint mostly moves only the keys it owned.

/// 64-bit FNV-1a over `bytes`, started from `seed`, with a final avalanche
/// (the splitmix64 finaliser) so that similar names spread well.
pub fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031;
const SKIP_SEED: u64 = 0x6d61_676c_6576_3032;
const KEY_SEED: u64 = 0x6d61_676c_6576_3033;

/// A lookup table: slot → index of the endpoint in the list it was built
/// from.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds the table of size `m` (a prime) for `names`.
    ///
    /// # Panics
    /// If `names` is empty or has more than `u32::MAX` entries (the caller
    /// checks both).
    pub fn new(names: &[&str], m: usize) -> Self {
        assert!(!names.is_empty() && names.len() < u32::MAX as usize);
        let perms: Vec<(usize, usize)> = names
            .iter()
            .map(|n| {
                let offset = (hash(OFFSET_SEED, n.as_bytes()) % m as u64) as usize;
                let skip = (hash(SKIP_SEED, n.as_bytes()) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; names.len()];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                // Walk endpoint i's permutation to its next free slot.
                let mut c = (offset + next[i] * skip) % m;
                while table[c] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Self { table }
    }

    /// The endpoint index for `key`.
    pub fn pick(&self, key: &[u8]) -> usize {
        let h = hash(KEY_SEED, key);
        self.table[(h % self.table.len() as u64) as usize] as usize
    }

    /// Slots owned by each of the `n` endpoints.
    #[cfg(test)]
    fn slots(&self, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &e in &self.table {
            counts[e as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
            .collect()
    }

    #[test]
    fn every_endpoint_owns_within_1_percent_of_m_over_n() {
        for n in [1, 2, 3, 7, 10, 64, 100] {
            let names = names(n);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let m = 65_537;
            let table = Maglev::new(&refs, m);
            let fair = m as f64 / n as f64;
            for (i, &s) in table.slots(n).iter().enumerate() {
                let off = (s as f64 - fair).abs() / fair;
                assert!(
                    off <= 0.01,
                    "n={n}: endpoint {i} owns {s} slots, fair {fair:.1}"
                );
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_the_keys() {
        const KEYS: usize = 100_000;
        for n in [5, 10, 20] {
            let names = names(n);
            let all: Vec<&str> = names.iter().map(String::as_str).collect();
            let before = Maglev::new(&all, 65_537);
            let removed = n / 2;
            let rest: Vec<&str> = all
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != removed)
                .map(|(_, s)| *s)
                .collect();
            let after = Maglev::new(&rest, 65_537);
            let mut moved = 0;
            for k in 0..KEYS {
                let key = format!("client-{k}");
                let a = all[before.pick(key.as_bytes())];
                let b = rest[after.pick(key.as_bytes())];
                if a != b {
                    moved += 1;
                    // Keys that were not on the removed endpoint mostly stay.
                }
            }
            let share = moved as f64 / KEYS as f64;
            let ideal = 1.0 / n as f64;
            // The paper reports a little extra disruption over the ideal
            // 1/N; allow 1.5×.
            assert!(
                share >= ideal * 0.8 && share <= ideal * 1.5,
                "n={n}: {share:.4} of keys moved, ideal {ideal:.4}"
            );
        }
    }

    #[test]
    fn same_key_same_endpoint() {
        let names = names(7);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t1 = Maglev::new(&refs, 65_537);
        let t2 = Maglev::new(&refs, 65_537);
        for k in 0..1000u32 {
            let key = k.to_le_bytes();
            assert_eq!(t1.pick(&key), t2.pick(&key));
        }
    }
}
