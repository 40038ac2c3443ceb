//! Tolerant matching of a bound component set against the current one.
//!
//! Hardware changes in small steps (a NIC is swapped, a VM gets a new MAC on
//! migration), and a license must survive those; a different machine must not
//! pass. The rule, also in `docs/hwid.md`:
//!
//! - Match: the sets are equal.
//! - If the bound set holds an anchor (machine-id or DMI UUID): Partial when at
//!   least one bound anchor is still present and at least half (rounded up) of
//!   the bound non-anchor components are still present; else Mismatch.
//! - If the bound set holds no anchor: Partial when strictly more than half of
//!   the bound components are still present; else Mismatch.

use std::collections::BTreeSet;

use super::{Component, HwMatch, MatchVerdict};

/// Compares under the documented rule (docs/hwid.md).
pub fn compare(bound: &[Component], current: &[Component]) -> HwMatch {
    // Sets, so that duplicates or order in either input change nothing; the
    // BTreeSet also yields `missing` and `added` sorted.
    let bound: BTreeSet<&Component> = bound.iter().collect();
    let current: BTreeSet<&Component> = current.iter().collect();

    let verdict = if bound == current {
        MatchVerdict::Match
    } else if tolerated(&bound, &current) {
        MatchVerdict::Partial
    } else {
        MatchVerdict::Mismatch
    };

    HwMatch {
        verdict,
        missing: bound.difference(&current).map(|c| (*c).clone()).collect(),
        added: current.difference(&bound).map(|c| (*c).clone()).collect(),
    }
}

/// Whether an unequal current set is still close enough to the bound one.
fn tolerated(bound: &BTreeSet<&Component>, current: &BTreeSet<&Component>) -> bool {
    let (anchors, others): (Vec<&Component>, Vec<&Component>) =
        bound.iter().partition(|c| c.kind.is_anchor());
    let held = |set: &[&Component]| set.iter().filter(|c| current.contains(*c)).count();

    if anchors.is_empty() {
        // Without an anchor only a majority protects against a different
        // machine that happens to share a CPU model or a cloned NIC.
        held(&others) * 2 > others.len()
    } else {
        held(&anchors) >= 1 && held(&others) >= others.len().div_ceil(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hwid::{hash_component, ComponentKind::*};

    fn c(kind: crate::hwid::ComponentKind, raw: &str) -> Component {
        hash_component(kind, raw)
    }

    fn sorted(mut v: Vec<Component>) -> Vec<Component> {
        v.sort();
        v
    }

    #[test]
    fn same_set_matches_in_any_order() {
        let bound = vec![c(MachineId, "m"), c(Mac, "a"), c(Cpu, "x")];
        let current = vec![c(Cpu, "x"), c(Mac, "a"), c(MachineId, "m"), c(Mac, "a")];
        let m = compare(&bound, &current);
        assert_eq!(m.verdict, MatchVerdict::Match);
        assert!(m.missing.is_empty());
        assert!(m.added.is_empty());
    }

    #[test]
    fn vm_with_a_changed_dynamic_mac_is_partial() {
        let bound = vec![
            c(MachineId, "m"),
            c(DmiUuid, "u"),
            c(Mac, "52:54:00:00:00:01"),
            c(Cpu, "x"),
        ];
        let current = vec![
            c(MachineId, "m"),
            c(DmiUuid, "u"),
            c(Mac, "52:54:00:00:00:02"),
            c(Cpu, "x"),
        ];
        let m = compare(&bound, &current);
        assert_eq!(m.verdict, MatchVerdict::Partial);
        assert_eq!(m.missing, vec![c(Mac, "52:54:00:00:00:01")]);
        assert_eq!(m.added, vec![c(Mac, "52:54:00:00:00:02")]);
    }

    #[test]
    fn nic_swap_on_bare_metal_is_partial() {
        let common = vec![
            c(MachineId, "m"),
            c(DmiUuid, "u"),
            c(BoardSerial, "s"),
            c(Mac, "b"),
            c(Cpu, "x"),
        ];
        let mut bound = common.clone();
        bound.push(c(Mac, "a"));
        let mut current = common;
        current.push(c(Mac, "new"));
        assert_eq!(compare(&bound, &current).verdict, MatchVerdict::Partial);
    }

    #[test]
    fn new_machine_id_alone_is_a_mismatch() {
        let bound = vec![c(MachineId, "m1"), c(Mac, "a"), c(Cpu, "x")];
        let current = vec![c(MachineId, "m2"), c(Mac, "a"), c(Cpu, "x")];
        assert_eq!(compare(&bound, &current).verdict, MatchVerdict::Mismatch);
    }

    #[test]
    fn new_machine_id_with_the_dmi_uuid_held_is_partial() {
        let bound = vec![
            c(MachineId, "m1"),
            c(DmiUuid, "u"),
            c(Mac, "a"),
            c(Cpu, "x"),
        ];
        let current = vec![
            c(MachineId, "m2"),
            c(DmiUuid, "u"),
            c(Mac, "a"),
            c(Cpu, "x"),
        ];
        assert_eq!(compare(&bound, &current).verdict, MatchVerdict::Partial);
    }

    #[test]
    fn anchor_held_but_most_other_components_gone_is_a_mismatch() {
        // Three non-anchors: two must stay (half of three, rounded up).
        let bound = vec![c(MachineId, "m"), c(Mac, "a"), c(Mac, "b"), c(Cpu, "x")];
        let two_held = vec![c(MachineId, "m"), c(Mac, "a"), c(Mac, "c"), c(Cpu, "x")];
        let one_held = vec![c(MachineId, "m"), c(Mac, "c"), c(Mac, "d"), c(Cpu, "x")];
        assert_eq!(compare(&bound, &two_held).verdict, MatchVerdict::Partial);
        assert_eq!(compare(&bound, &one_held).verdict, MatchVerdict::Mismatch);
    }

    #[test]
    fn anchor_only_binding_is_partial_while_an_anchor_holds() {
        // No non-anchors bound: zero of zero is enough.
        let bound = vec![c(MachineId, "m"), c(DmiUuid, "u")];
        let current = vec![c(MachineId, "m"), c(Mac, "new")];
        assert_eq!(compare(&bound, &current).verdict, MatchVerdict::Partial);
    }

    #[test]
    fn everything_new_is_a_mismatch_with_full_detail() {
        let bound = vec![
            c(MachineId, "m1"),
            c(DmiUuid, "u1"),
            c(Mac, "a"),
            c(Cpu, "x"),
        ];
        let current = vec![
            c(MachineId, "m2"),
            c(DmiUuid, "u2"),
            c(Mac, "b"),
            c(Cpu, "y"),
        ];
        let m = compare(&bound, &current);
        assert_eq!(m.verdict, MatchVerdict::Mismatch);
        assert_eq!(m.missing, sorted(bound));
        assert_eq!(m.added, sorted(current));
    }

    #[test]
    fn no_anchor_needs_strictly_more_than_half() {
        let bound = vec![c(BoardSerial, "s"), c(Mac, "a"), c(Cpu, "x")];
        let two_of_three = vec![c(BoardSerial, "s"), c(Mac, "b"), c(Cpu, "x")];
        let one_of_three = vec![c(BoardSerial, "s"), c(Mac, "b"), c(Cpu, "y")];
        assert_eq!(
            compare(&bound, &two_of_three).verdict,
            MatchVerdict::Partial
        );
        assert_eq!(
            compare(&bound, &one_of_three).verdict,
            MatchVerdict::Mismatch
        );

        // Exactly half is not enough without an anchor.
        let bound = vec![c(Mac, "a"), c(Cpu, "x")];
        let current = vec![c(Mac, "b"), c(Cpu, "x")];
        assert_eq!(compare(&bound, &current).verdict, MatchVerdict::Mismatch);
    }

    #[test]
    fn no_anchor_bound_is_not_rescued_by_a_new_anchor() {
        // An anchor that was never bound proves nothing about the old machine.
        let bound = vec![c(Mac, "a"), c(Cpu, "x")];
        let current = vec![c(MachineId, "m"), c(Mac, "b"), c(Cpu, "x")];
        assert_eq!(compare(&bound, &current).verdict, MatchVerdict::Mismatch);
    }

    #[test]
    fn added_components_alone_are_partial() {
        let bound = vec![c(MachineId, "m"), c(Mac, "a")];
        let current = vec![c(MachineId, "m"), c(Mac, "a"), c(Mac, "b")];
        let m = compare(&bound, &current);
        assert_eq!(m.verdict, MatchVerdict::Partial);
        assert!(m.missing.is_empty());
        assert_eq!(m.added, vec![c(Mac, "b")]);
    }
}
