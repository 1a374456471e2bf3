//! Assigning hardware lines to spec lines.
//!
//! The answer is the one a plain depth-first search finds first — spec lines in file order,
//! hardware lines in list order, each hardware line used at most once — as eDeploy defined it, so
//! an existing configure script sees the same disk and NIC as before. eDeploy kept a single retry
//! point (satisfiable specs failed) and its successor backtracks exponentially; here the same
//! search is made cheap without changing which solution comes first:
//!
//! - hardware lines are indexed by (category, key), and each spec line's *candidates* (lines that
//!   pass its literals and functions, whatever the variables hold) are computed once;
//! - after each choice, *forward checking* verifies that every later line sharing a freshly bound
//!   variable still has a usable candidate;
//! - when the search starts to backtrack, a *bipartite matching* check verifies that the remaining
//!   spec lines can still each get a distinct unused hardware line (pigeonhole failures die at once);
//! - failed subtrees are *memoised* by (depth, bindings of the variables still to be read, used
//!   lines among those still reachable), so symmetric choices are explored once.
//!
//! All of these only cut subtrees that contain no solution, so the first solution is unchanged
//! (a property test compares against a brute-force search).

use std::collections::{HashMap, HashSet};

use edeploy_hw::{HardwareList, HwLine};

use crate::specs::Specs;

/// A successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// For each spec line, the index of the hardware line it took.
    pub assignment: Vec<usize>,
    /// Variables in order of first appearance in the specs, with their values.
    pub vars: Vec<(String, String)>,
    /// The subset of `vars` written `$$name` somewhere (they select the CMDB entry).
    pub pref_vars: Vec<(String, String)>,
}

/// A category's lines, and its lines by key.
type CategoryIndex<'h> = (Vec<usize>, HashMap<&'h str, Vec<usize>>);

/// Hardware lines indexed by (category, key) and by category. Build it once per machine when
/// matching many profiles.
pub struct HwIndex<'h> {
    pub lines: &'h [HwLine],
    /// category -> (its lines, key -> its lines); nested so that lookups borrow `str` freely.
    by_cat: HashMap<&'h str, CategoryIndex<'h>>,
    all: Vec<usize>,
}

impl<'h> HwIndex<'h> {
    pub fn new(hw: &'h HardwareList) -> Self {
        let lines = hw.lines();
        let mut by_cat: HashMap<&str, CategoryIndex> = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            let (all, by_key) = by_cat.entry(l.category()).or_default();
            all.push(i);
            by_key.entry(l.key()).or_default().push(i);
        }
        HwIndex {
            lines,
            by_cat,
            all: (0..lines.len()).collect(),
        }
    }

    /// The hardware lines a spec line can only ever take, in list order.
    fn pool(&self, specs: &Specs, line: usize) -> &[usize] {
        match specs.literal_cat_key(line) {
            (Some(c), Some(k)) => self
                .by_cat
                .get(c)
                .and_then(|(_, by_key)| by_key.get(k))
                .map_or(&[], Vec::as_slice),
            (Some(c), None) => self.by_cat.get(c).map_or(&[], |(all, _)| all.as_slice()),
            _ => &self.all,
        }
    }
}

/// Matches a profile's specs against a machine's hardware list.
pub fn match_specs(specs: &Specs, hw: &HardwareList) -> Option<Match> {
    match_indexed(specs, &HwIndex::new(hw))
}

/// Like [`match_specs`] with a prepared index.
pub fn match_indexed(specs: &Specs, index: &HwIndex) -> Option<Match> {
    // A spec line no hardware line can take means no match: said before building the search,
    // which costs more than this (a server tries every profile in state order, and most fail
    // on their first line). Only a shortcut: the search itself would find nothing either.
    let mut cands = Vec::with_capacity(specs.lines.len());
    for i in 0..specs.lines.len() {
        let c = line_candidates(specs, index, i);
        if c.is_empty() {
            return None;
        }
        cands.push(c);
    }
    let mut search = Search::with_candidates(specs, index, cands);
    search.run().then(|| search.result())
}

/// A candidate hardware line of a spec line, with the bindings it makes.
pub(crate) struct Cand<'h> {
    pub hw: usize,
    pub binds: Vec<(usize, &'h str)>,
}

/// Candidates of every spec line (tests that do not depend on variables).
pub(crate) fn candidates<'h>(specs: &Specs, index: &HwIndex<'h>) -> Vec<Vec<Cand<'h>>> {
    (0..specs.lines.len())
        .map(|i| line_candidates(specs, index, i))
        .collect()
}

/// Candidates of spec line `i`.
fn line_candidates<'h>(specs: &Specs, index: &HwIndex<'h>, i: usize) -> Vec<Cand<'h>> {
    index
        .pool(specs, i)
        .iter()
        .filter_map(|&h| {
            specs
                .line_bindings(i, &index.lines[h].0)
                .map(|binds| Cand { hw: h, binds })
        })
        .collect()
}

type MemoKey<'h> = (usize, Vec<Option<&'h str>>, Vec<u64>);

pub(crate) struct Search<'s, 'h> {
    specs: &'s Specs,
    pub cands: Vec<Vec<Cand<'h>>>,
    /// For each depth, the variables read by the lines from that depth on.
    future_vars: Vec<Vec<usize>>,
    /// For each depth, the hardware lines some line from that depth on can take (bitset).
    reachable: Vec<Vec<u64>>,
    /// For each variable, the lines (by index) that read it.
    readers: Vec<Vec<usize>>,
    pub bind: Vec<Option<&'h str>>,
    used: Vec<u64>,
    pub assign: Vec<usize>,
    failed: HashSet<MemoKey<'h>>,
    /// Nodes visited; the matching check only kicks in once the search starts backtracking.
    pub nodes: u64,
    /// Budget of nodes (explain's bounded search); `u64::MAX` for a real match.
    pub budget: u64,
    /// Pruning and memoisation switched off (explain wants the raw depth-first walk).
    pub plain: bool,
    /// The deepest prefix the search reached (first time), for explanations.
    pub deepest: (usize, Vec<usize>, Vec<Option<&'h str>>),
}

fn words(n: usize) -> usize {
    n.div_ceil(64)
}

impl<'s, 'h> Search<'s, 'h> {
    pub fn new(specs: &'s Specs, index: &HwIndex<'h>) -> Self {
        Self::with_candidates(specs, index, candidates(specs, index))
    }

    /// A search over already computed [`candidates`].
    fn with_candidates(specs: &'s Specs, index: &HwIndex<'h>, cands: Vec<Vec<Cand<'h>>>) -> Self {
        let n = specs.lines.len();
        let w = words(index.lines.len());
        let mut future_vars = vec![Vec::new(); n + 1];
        let mut reachable = vec![vec![0u64; w]; n + 1];
        let mut readers = vec![Vec::new(); specs.vars.len()];
        for i in (0..n).rev() {
            let mut fv = future_vars[i + 1].clone();
            for id in specs.lines[i].var_ids.iter().flatten() {
                if !fv.contains(id) {
                    fv.push(*id);
                }
                if !readers[*id].contains(&i) {
                    readers[*id].push(i);
                }
            }
            fv.sort_unstable();
            future_vars[i] = fv;
            let mut r = reachable[i + 1].clone();
            for c in &cands[i] {
                r[c.hw / 64] |= 1 << (c.hw % 64);
            }
            reachable[i] = r;
        }
        for r in &mut readers {
            r.sort_unstable();
        }
        Search {
            specs,
            cands,
            future_vars,
            reachable,
            readers,
            bind: vec![None; specs.vars.len()],
            used: vec![0; w],
            assign: Vec::with_capacity(n),
            failed: HashSet::new(),
            nodes: 0,
            budget: u64::MAX,
            plain: false,
            deepest: (0, Vec::new(), Vec::new()),
        }
    }

    fn is_used(&self, h: usize) -> bool {
        self.used[h / 64] & (1 << (h % 64)) != 0
    }

    fn set_used(&mut self, h: usize, on: bool) {
        if on {
            self.used[h / 64] |= 1 << (h % 64);
        } else {
            self.used[h / 64] &= !(1 << (h % 64));
        }
    }

    fn consistent(&self, binds: &[(usize, &'h str)]) -> bool {
        binds
            .iter()
            .all(|(v, val)| self.bind[*v].is_none_or(|b| b == *val))
    }

    /// Runs the search from the root.
    pub fn run(&mut self) -> bool {
        if !self.plain && !self.matching_possible(0) {
            return false;
        }
        self.dfs(0)
    }

    fn memo_key(&self, i: usize) -> MemoKey<'h> {
        let b = self.future_vars[i].iter().map(|&v| self.bind[v]).collect();
        let u = self
            .used
            .iter()
            .zip(&self.reachable[i])
            .map(|(u, r)| u & r)
            .collect();
        (i, b, u)
    }

    fn dfs(&mut self, i: usize) -> bool {
        if i > self.deepest.0 || self.deepest.1.is_empty() && i == 0 {
            self.deepest = (i, self.assign.clone(), self.bind.clone());
        }
        if i == self.specs.lines.len() {
            return true;
        }
        self.nodes += 1;
        if self.nodes > self.budget {
            return false;
        }
        let key = (!self.plain).then(|| self.memo_key(i));
        if let Some(k) = &key {
            if self.failed.contains(k) {
                return false;
            }
        }
        for c in 0..self.cands[i].len() {
            let (h, ok) = {
                let cand = &self.cands[i][c];
                (
                    cand.hw,
                    !self.is_used(cand.hw) && self.consistent(&cand.binds),
                )
            };
            if !ok {
                continue;
            }
            let mut fresh: Vec<usize> = Vec::new();
            for &(v, val) in &self.cands[i][c].binds {
                if self.bind[v].is_none() {
                    self.bind[v] = Some(val);
                    fresh.push(v);
                }
            }
            self.set_used(h, true);
            self.assign.push(h);
            let viable = self.plain || (self.forward_ok(i, &fresh) && self.matching_ok(i + 1));
            if viable && self.dfs(i + 1) {
                return true;
            }
            self.assign.pop();
            self.set_used(h, false);
            for v in fresh {
                self.bind[v] = None;
            }
            if self.nodes > self.budget {
                return false;
            }
        }
        if let Some(k) = key {
            self.failed.insert(k);
        }
        false
    }

    /// Forward checking with unit propagation: every later line that reads a freshly bound
    /// variable must still have a usable candidate; a line left with exactly one is *forced*: its
    /// hardware line is reserved and its bindings propagate to the lines that read them. This is
    /// what stops a decoy like "the k-th disk must have the first disk's size" at the first
    /// binding instead of after trying every ordering of the disks in between.
    fn forward_ok(&self, i: usize, fresh: &[usize]) -> bool {
        let n = self.specs.lines.len();
        let mut extra: Vec<(usize, &'h str)> = Vec::new();
        let mut reserved: Vec<usize> = Vec::new();
        let mut resolved = vec![false; n];
        let mut queue: Vec<usize> = Vec::new();
        let push_readers = |v: usize, queue: &mut Vec<usize>| {
            for &j in &self.readers[v] {
                if j > i && !queue.contains(&j) {
                    queue.push(j);
                }
            }
        };
        for &v in fresh {
            push_readers(v, &mut queue);
        }
        while let Some(j) = queue.pop() {
            if resolved[j] {
                continue;
            }
            let mut only: Option<usize> = None;
            let mut count = 0;
            for (c, cand) in self.cands[j].iter().enumerate() {
                if self.is_used(cand.hw) || reserved.contains(&cand.hw) {
                    continue;
                }
                let ok = cand.binds.iter().all(|(v, val)| {
                    let bound = self.bind[*v]
                        .or_else(|| extra.iter().find(|(e, _)| e == v).map(|(_, x)| *x));
                    bound.is_none_or(|b| b == *val)
                });
                if ok {
                    count += 1;
                    only = Some(c);
                    if count > 1 {
                        break;
                    }
                }
            }
            match (count, only) {
                (0, _) => return false,
                (1, Some(c)) => {
                    resolved[j] = true;
                    let cand = &self.cands[j][c];
                    reserved.push(cand.hw);
                    for &(v, val) in &cand.binds {
                        if self.bind[v].is_none() && !extra.iter().any(|(e, _)| *e == v) {
                            extra.push((v, val));
                            push_readers(v, &mut queue);
                        }
                    }
                }
                _ => {}
            }
        }
        true
    }

    /// The bipartite check is worth its cost only once the search has had to backtrack.
    fn matching_ok(&self, from: usize) -> bool {
        let n = self.specs.lines.len();
        if self.nodes < 2 * n as u64 + 8 {
            return true;
        }
        self.matching_possible(from)
    }

    /// Whether lines `from..` can each get a distinct unused hardware line consistent with the
    /// current bindings (Kuhn's augmenting paths; a relaxation that ignores the variables the
    /// remaining lines would bind between themselves).
    fn matching_possible(&self, from: usize) -> bool {
        let n = self.specs.lines.len();
        let mut owner: HashMap<usize, usize> = HashMap::new();
        for j in from..n {
            let mut seen: HashSet<usize> = HashSet::new();
            if !self.augment(j, &mut owner, &mut seen) {
                return false;
            }
        }
        true
    }

    fn augment(
        &self,
        j: usize,
        owner: &mut HashMap<usize, usize>,
        seen: &mut HashSet<usize>,
    ) -> bool {
        for c in &self.cands[j] {
            if self.is_used(c.hw) || !self.consistent(&c.binds) || !seen.insert(c.hw) {
                continue;
            }
            match owner.get(&c.hw).copied() {
                None => {
                    owner.insert(c.hw, j);
                    return true;
                }
                Some(other) => {
                    if self.augment(other, owner, seen) {
                        owner.insert(c.hw, j);
                        return true;
                    }
                }
            }
        }
        false
    }

    pub fn result(&self) -> Match {
        let mut vars = Vec::new();
        let mut pref_vars = Vec::new();
        for (id, name) in self.specs.vars.iter().enumerate() {
            if let Some(v) = self.bind[id] {
                vars.push((name.clone(), v.to_string()));
                if self.specs.pref[id] {
                    pref_vars.push((name.clone(), v.to_string()));
                }
            }
        }
        Match {
            assignment: self.assign.clone(),
            vars,
            pref_vars,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(lines: &[[&str; 4]]) -> HardwareList {
        HardwareList::from_rows(lines)
    }

    fn specs(text: &str) -> Specs {
        Specs::parse(text, "t.specs").unwrap()
    }

    fn vars(m: &Match) -> Vec<(&str, &str)> {
        m.vars
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    /// eDeploy's README example.
    #[test]
    fn readme_example() {
        let h = hw(&[
            ["disk", "sda", "size", "20"],
            ["network", "eth0", "serial", "aa:bb:cc:dd:ee:ff"],
            ["network", "eth0", "ipv4", "10.0.2.15"],
            ["system", "product", "vendor", "QEMU"],
        ]);
        let s = specs(
            "[('disk', '$disk', 'size', 'gt(4)'),
              ('network', '$eth', 'ipv4', 'network(10.0.2.0/24)'),
              ('network', '$eth', 'serial', '$$mac'),
              ('system', 'product', 'vendor', 'QEMU')]",
        );
        let m = match_specs(&s, &h).unwrap();
        assert_eq!(
            vars(&m),
            [
                ("disk", "sda"),
                ("eth", "eth0"),
                ("mac", "aa:bb:cc:dd:ee:ff")
            ]
        );
        assert_eq!(
            m.pref_vars,
            [("mac".to_string(), "aa:bb:cc:dd:ee:ff".to_string())]
        );
        assert_eq!(m.assignment, [0, 2, 1, 3]);
    }

    #[test]
    fn backtracks_when_the_first_choice_of_a_variable_is_wrong() {
        // $disk first binds sda (size 20), but only sdb has an SSD model line.
        let h = hw(&[
            ["disk", "sda", "size", "20"],
            ["disk", "sdb", "size", "40"],
            ["disk", "sda", "model", "HDD"],
            ["disk", "sdb", "model", "SSD"],
        ]);
        let s = specs("[('disk', '$disk', 'size', 'gt(10)'), ('disk', '$disk', 'model', 'SSD')]");
        let m = match_specs(&s, &h).unwrap();
        assert_eq!(vars(&m), [("disk", "sdb")]);
        assert_eq!(m.assignment, [1, 3]);
    }

    #[test]
    fn backtracks_deep_chains() {
        // Two-level wrong choices: the right NIC is the last one and needs its own ipv4 line.
        let h = hw(&[
            ["network", "eth0", "serial", "m0"],
            ["network", "eth1", "serial", "m1"],
            ["network", "eth2", "serial", "m2"],
            ["network", "eth0", "link", "yes"],
            ["network", "eth1", "link", "yes"],
            ["network", "eth2", "link", "yes"],
            ["network", "eth2", "ipv4", "10.1.0.5"],
        ]);
        let s = specs(
            "[('network', '$a', 'serial', '$ma'), ('network', '$a', 'link', 'yes'),
              ('network', '$b', 'serial', '$mb'), ('network', '$b', 'ipv4', 'network(10.1.0.0/16)')]",
        );
        let m = match_specs(&s, &h).unwrap();
        assert_eq!(
            vars(&m),
            [("a", "eth0"), ("ma", "m0"), ("b", "eth2"), ("mb", "m2")]
        );
    }

    #[test]
    fn each_hardware_line_is_used_once() {
        let h = hw(&[["disk", "sda", "size", "20"], ["disk", "sdb", "size", "20"]]);
        let two = specs("[('disk', '$a', 'size', '20'), ('disk', '$b', 'size', '20')]");
        let m = match_specs(&two, &h).unwrap();
        assert_eq!(vars(&m), [("a", "sda"), ("b", "sdb")]);
        let three = specs("[('disk', '$a', 'size', '20'), ('disk', '$b', 'size', '20'), ('disk', '$c', 'size', '20')]");
        assert!(match_specs(&three, &h).is_none());
        let same = specs("[('disk', 'sda', 'size', '20'), ('disk', 'sda', 'size', '20')]");
        assert!(match_specs(&same, &h).is_none());
    }

    #[test]
    fn dollar_and_double_dollar_are_one_variable() {
        let h = hw(&[
            ["network", "eth0", "serial", "m0"],
            ["network", "eth0", "ipv4", "1.2.3.4"],
        ]);
        let s =
            specs("[('network', '$$eth', 'serial', '$mac'), ('network', '$eth', 'ipv4', '$ip')]");
        let m = match_specs(&s, &h).unwrap();
        assert_eq!(
            vars(&m),
            [("eth", "eth0"), ("mac", "m0"), ("ip", "1.2.3.4")]
        );
        assert_eq!(m.pref_vars.len(), 1);
    }

    #[test]
    fn var_with_function_binds_only_when_the_function_holds() {
        let h = hw(&[
            ["disk", "sda", "size", "8"],
            ["disk", "sdb", "size", "1200.00"],
        ]);
        let s = specs("[('disk', '$d', 'size', '$size=ge(100)')]");
        let m = match_specs(&s, &h).unwrap();
        assert_eq!(vars(&m), [("d", "sdb"), ("size", "1200.00")]);
    }

    #[test]
    fn float_sizes_do_not_crash() {
        let h = hw(&[["memory", "total", "size", "1200.00"]]);
        assert!(match_specs(&specs("[('memory', 'total', 'size', 'gt(1000)')]"), &h).is_some());
        assert!(match_specs(&specs("[('memory', 'total', 'size', 'lt(1000)')]"), &h).is_none());
    }

    #[test]
    fn empty_specs_match_anything() {
        let m = match_specs(&specs("[]"), &HardwareList::new()).unwrap();
        assert!(m.vars.is_empty());
    }

    #[test]
    fn adversarial_decoy_is_fast() {
        // k disks, each spec line binds two variables; the last line is a decoy that can never
        // hold because it asks for the same disk with another's size.
        let k = 12;
        let mut h = HardwareList::new();
        for d in 0..k {
            h.push("disk", &format!("sd{d}"), "size", &format!("{}", 100 + d));
        }
        let mut text = String::from("[");
        for d in 0..k {
            text += &format!("('disk', '$d{d}', 'size', '$s{d}'),");
        }
        text += "('disk', '$d0', 'size', '$s1')]";
        let s = specs(&text);
        let start = std::time::Instant::now();
        let mut search = Search::new(&s, &HwIndex::new(&h));
        assert!(!search.run());
        assert!(search.nodes < 10_000, "{} nodes", search.nodes);
        assert!(start.elapsed().as_secs() < 5);
    }
}
