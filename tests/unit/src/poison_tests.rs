// SPDX-License-Identifier: GPL-2.0

//! The poison table (src/device/poison/table.rs) against a set: what memory-failure's callback records
//! and what faults and accesses ask.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::poison_table::PoisonTable;
use crate::poison_table::Recorded;
use crate::poison_table::CAPACITY;

#[test]
fn empty_table_has_nothing() {
    let t = PoisonTable::new();
    assert!(t.recorded().is_empty());
    assert!(!t.any_in(0, u64::MAX));
    assert_eq!(t.dropped(), 0);
}

#[test]
fn range_edges() {
    let mut t = PoisonTable::new();
    assert_eq!(t.record(1000), Recorded::Added);
    assert!(t.any_in(1000, 1));
    assert!(t.any_in(999, 2));
    assert!(!t.any_in(999, 1));
    assert!(!t.any_in(1001, 1 << 9));
    // A PMD of 4 KiB pages that holds it, and one that ends just before it.
    assert!(t.any_in(512, 512));
    assert!(!t.any_in(0, 512));
    assert!(!t.any_in(1001, u64::MAX - 1001));
    assert!(t.any_in(0, u64::MAX));
}

#[test]
fn full_table_drops_and_counts() {
    let mut t = PoisonTable::new();
    for p in 0..CAPACITY as u64 {
        assert_eq!(t.record(p * 3), Recorded::Added);
    }
    assert_eq!(t.record(3), Recorded::Known);
    assert_eq!(t.record(1), Recorded::Full);
    assert_eq!(t.record(1), Recorded::Full);
    assert_eq!(t.dropped(), 2);
    assert_eq!(t.recorded().len(), CAPACITY);
    assert!(!t.any_in(1, 1));
}

proptest! {
    /// Any sequence of reports: the table holds the first CAPACITY distinct PFNs in order,
    /// answers range queries as the set of them does, and counts the rest as dropped.
    #[test]
    fn matches_a_set(reports in prop::collection::vec(0u64..2048, 0..600),
                     queries in prop::collection::vec((0u64..2100, 0u64..600), 1..40)) {
        let mut t = PoisonTable::new();
        let mut kept: Vec<u64> = Vec::new();
        let mut dropped = 0u64;
        for &p in &reports {
            let want = if kept.contains(&p) {
                Recorded::Known
            } else if kept.len() == CAPACITY {
                dropped += 1;
                Recorded::Full
            } else {
                kept.push(p);
                Recorded::Added
            };
            prop_assert_eq!(t.record(p), want);
        }
        prop_assert_eq!(t.recorded(), &kept[..]);
        prop_assert_eq!(t.dropped(), dropped);
        let set: BTreeSet<u64> = kept.iter().copied().collect();
        for (first, n) in queries {
            let want = set.range(first..first.saturating_add(n)).next().is_some();
            prop_assert_eq!(t.any_in(first, n), want, "any_in({}, {})", first, n);
        }
    }
}
