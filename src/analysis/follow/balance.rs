//! Equal counts per block for grouped convs: ONNX wants each of a grouped conv's `group` blocks
//! of input (and output) channels to keep as many. A union-find can only tie, so once every other
//! rule has tied what it ties, the classes of each such value's positions are merged until every
//! class holds as many positions of each block; any set of whole classes kept is then balanced.
//! A union of two balanced classes stays balanced, but a union made for one value can unbalance
//! a class in another, so the values are gone over again until nothing is tied (each productive
//! pass merges classes, so this ends).
//!
//! Two ways to choose the merges, both tried, the one leaving more group channels kept:
//! - **rows**: per block, the positions of the unbalanced classes ordered by (the class's count
//!   in the block, descending; class; position), the `k`-th of every block tied. With fresh
//!   positions this ties equal offsets; after a channel shuffle it keeps the runs of one channel
//!   together (ShuffleNet's 136 = 4 × 34 channels shuffled in runs of 4: 9 channels).
//! - **merge**: the unbalanced classes merged in small balanced sets, greedily: start from the
//!   largest, add the class that brings the counts closest to equal (least variance, then the
//!   smaller, then by class) until they are equal (ShuffleNet's stream, where stage 1's blocks
//!   of 28 and 34 and the stem's of 6 cross: 16 channels, where rows leave 11, one of 384
//!   positions).
//!
//! Narrow blocks go first: a grouped producer's equal offsets are then tied before a wider
//! consumer's blocks line them up with other classes.

use std::collections::BTreeMap;

use super::Building;
use crate::ir::ValueId;

#[derive(Clone, Copy)]
enum Strategy {
    Rows,
    Merge,
}

impl Building {
    /// Balances the blocks of every value recorded in `blocks` (module docs).
    pub(super) fn balance_blocks(&mut self) {
        let mut blocks = std::mem::take(&mut self.blocks);
        if blocks.is_empty() {
            return;
        }
        blocks.sort_by_key(|&(v, groups)| {
            let width = self.view(v).map_or(0, |view| view.channels / groups.max(1));
            (width, v)
        });
        let start = self.parent.clone();
        self.resolve(&blocks, Strategy::Rows);
        let rows = std::mem::replace(&mut self.parent, start);
        let classes = |parent: &[usize]| (0..parent.len()).filter(|&x| parent[x] == x).count();
        let by_rows = classes(&rows);
        self.resolve(&blocks, Strategy::Merge);
        if by_rows > classes(&self.parent) {
            self.parent = rows;
        }
    }

    fn resolve(&mut self, blocks: &[(ValueId, usize)], strategy: Strategy) {
        while blocks.iter().fold(false, |tied, &(v, groups)| {
            self.balance(v, groups, strategy) | tied
        }) {}
    }

    /// Merges classes of `v`'s positions (cut into `groups` equal blocks) until each holds as
    /// many positions of every block; returns whether it merged any.
    fn balance(&mut self, v: ValueId, groups: usize, strategy: Strategy) -> bool {
        let Some(&i) = self.index.get(&v) else {
            return false;
        };
        let (base, n) = (self.values[i].2, self.values[i].1.channels);
        if groups < 2 || !n.is_multiple_of(groups) {
            return false;
        }
        let s = n / groups;
        let roots: Vec<usize> = (0..n).map(|p| self.find(base + p)).collect();
        let mut counts: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
        for (p, &r) in roots.iter().enumerate() {
            counts.entry(r).or_insert_with(|| vec![0; groups])[p / s] += 1;
        }
        let items: Vec<(usize, Vec<i64>)> = counts
            .iter()
            .filter(|(_, c)| spread(c) != 0)
            .map(|(&r, c)| (r, c.clone()))
            .collect();
        if items.is_empty() {
            return false;
        }
        match strategy {
            Strategy::Rows => {
                let orders: Vec<Vec<usize>> = (0..groups)
                    .map(|blk| {
                        let mut ps: Vec<usize> = (blk * s..(blk + 1) * s)
                            .filter(|&p| spread(&counts[&roots[p]]) != 0)
                            .collect();
                        ps.sort_by_key(|&p| {
                            (std::cmp::Reverse(counts[&roots[p]][blk]), roots[p], p)
                        });
                        ps
                    })
                    .collect();
                for k in 0..orders[0].len() {
                    for order in &orders[1..] {
                        self.union(base + orders[0][k], base + order[k]);
                    }
                }
            }
            Strategy::Merge => self.merge_balanced(items),
        }
        true
    }

    /// Merges the classes `items` (root, count per block; together balanced) in small balanced
    /// sets, greedily (module docs).
    fn merge_balanced(&mut self, mut items: Vec<(usize, Vec<i64>)>) {
        let total = |c: &[i64]| c.iter().sum::<i64>();
        while let Some(first) =
            (0..items.len()).max_by_key(|&i| (total(&items[i].1), std::cmp::Reverse(i)))
        {
            let (root, mut acc) = items.remove(first);
            while spread(&acc) != 0 {
                let with =
                    |c: &[i64]| -> Vec<i64> { acc.iter().zip(c).map(|(a, b)| a + b).collect() };
                let Some(best) = (0..items.len())
                    .min_by_key(|&i| (spread(&with(&items[i].1)), total(&items[i].1), i))
                else {
                    break;
                };
                let (other, c) = items.remove(best);
                acc = with(&c);
                self.union(root, other);
            }
        }
    }
}

/// `n ·` the variance of the counts `c` (`n` of them): 0 when they are equal.
fn spread(c: &[i64]) -> i64 {
    let sum: i64 = c.iter().sum();
    c.len() as i64 * c.iter().map(|x| x * x).sum::<i64>() - sum * sum
}

#[cfg(test)]
mod tests {
    use super::super::Building;
    use crate::analysis::rules::ChannelView;

    /// A building with one value of `n` positions, `ties` applied, its blocks recorded.
    fn balanced(n: usize, groups: usize, ties: &[(usize, usize)]) -> Vec<Vec<usize>> {
        let mut b = Building::default();
        let view = ChannelView {
            channels: n,
            flat: None,
            dims: vec![n],
            sub: None,
        };
        b.values.push((0, view, 0));
        b.index.insert(0, 0);
        b.parent = (0..n).collect();
        for &(x, y) in ties {
            b.union(x, y);
        }
        b.blocks.push((0, groups));
        b.balance_blocks();
        let mut classes: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for p in 0..n {
            classes.entry(b.find(p)).or_default().push(p);
        }
        let s = n / groups;
        for c in classes.values() {
            let per: Vec<usize> = (0..groups)
                .map(|blk| c.iter().filter(|&&p| p / s == blk).count())
                .collect();
            assert!(
                per.iter().all(|&k| k == per[0]),
                "unbalanced class {c:?}: {per:?}"
            );
        }
        classes.into_values().collect()
    }

    #[test]
    fn a_shuffled_block_keeps_the_runs_of_a_channel_together() {
        // 136 = 4 × 34 positions, runs of 4 (one shuffled channel) tied: equal offsets would
        // tie everything; rows keep 8 sets of 4 whole runs and the 2 runs cut by the blocks.
        let ties: Vec<(usize, usize)> = (0..136).map(|q| (q, q - q % 4)).collect();
        assert_eq!(balanced(136, 4, &ties).len(), 9);
    }

    #[test]
    fn crossing_blocks_merge_into_small_balanced_sets() {
        // ShuffleNet's stage-1 stream: positions 0..112 tied in rows j + 28b (a grouped
        // producer's blocks), 112..136 in rows 112 + 6b + k (the stem's), read by a grouped
        // consumer in blocks of 34. 10 rows are balanced alone; the other 18 and the stem's 6
        // balance in sets of one row of each kind: 16 channels.
        let mut ties: Vec<(usize, usize)> = (0..112).map(|p| (p, p % 28)).collect();
        ties.extend((0..24).map(|t| (112 + t, 112 + t % 6)));
        let classes = balanced(136, 4, &ties);
        assert_eq!(classes.len(), 16, "{classes:?}");
    }
}
