//! The matcher must return exactly what a plain depth-first search returns (spec lines in order,
//! hardware lines in order, each hardware line at most once): pruning and memoisation may only
//! cut subtrees without solutions.

use edeploy_hw::{HardwareList, HwLine};
use edeploy_spec::{match_specs, Specs};
use proptest::prelude::*;

/// The obviously-correct search, with no pruning at all.
fn brute(specs: &Specs, hw: &HardwareList) -> Option<(Vec<usize>, Vec<Option<String>>)> {
    fn go(
        specs: &Specs,
        hw: &HardwareList,
        i: usize,
        used: &mut Vec<bool>,
        bind: &mut Vec<Option<String>>,
        assign: &mut Vec<usize>,
    ) -> bool {
        if i == specs.lines.len() {
            return true;
        }
        for (h, line) in hw.lines().iter().enumerate() {
            if used[h] {
                continue;
            }
            let Some(binds) = specs.line_bindings(i, &line.0) else {
                continue;
            };
            if binds
                .iter()
                .any(|(v, val)| bind[*v].as_deref().is_some_and(|b| b != *val))
            {
                continue;
            }
            let fresh: Vec<usize> = binds
                .iter()
                .filter(|(v, _)| bind[*v].is_none())
                .map(|(v, _)| *v)
                .collect();
            for (v, val) in &binds {
                bind[*v].get_or_insert_with(|| val.to_string());
            }
            used[h] = true;
            assign.push(h);
            if go(specs, hw, i + 1, used, bind, assign) {
                return true;
            }
            assign.pop();
            used[h] = false;
            for v in fresh {
                bind[v] = None;
            }
        }
        false
    }
    let mut used = vec![false; hw.len()];
    let mut bind = vec![None; specs.vars.len()];
    let mut assign = Vec::new();
    go(specs, hw, 0, &mut used, &mut bind, &mut assign).then_some((assign, bind))
}

fn hw_line() -> impl Strategy<Value = HwLine> {
    (
        prop::sample::select(vec!["disk", "net"]),
        prop::sample::select(vec!["a", "b", "c"]),
        prop::sample::select(vec!["size", "model"]),
        prop::sample::select(vec!["1", "2", "3", "x"]),
    )
        .prop_map(|(c, i, k, v)| HwLine::new(c, i, k, v))
}

fn element(pos: usize) -> impl Strategy<Value = String> {
    let lits: Vec<&'static str> = match pos {
        0 => vec!["disk", "net"],
        1 => vec!["a", "b", "c"],
        2 => vec!["size", "model"],
        _ => vec!["1", "2", "3", "x"],
    };
    prop_oneof![
        3 => prop::sample::select(lits).prop_map(str::to_string),
        3 => prop::sample::select(vec!["$x", "$y", "$z", "$$x", "$$w"]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["gt(1)", "in(1, 3)", "not(2)", "$y=le(2)", "or(x, ge(3))", "regexp(^[ab]$)"])
            .prop_map(str::to_string),
    ]
}

fn spec_line() -> impl Strategy<Value = String> {
    (element(0), element(1), element(2), element(3))
        .prop_map(|(a, b, c, d)| format!("('{a}', '{b}', '{c}', '{d}')"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn agrees_with_brute_force(
        lines in prop::collection::vec(hw_line(), 0..9),
        spec_lines in prop::collection::vec(spec_line(), 0..6),
    ) {
        let hw: HardwareList = lines.into_iter().collect();
        let specs = Specs::parse(&format!("[{}]", spec_lines.join(", ")), "p").unwrap();
        let expected = brute(&specs, &hw);
        let got = match_specs(&specs, &hw);
        match (expected, got) {
            (None, None) => {}
            (Some((assign, bind)), Some(m)) => {
                prop_assert_eq!(&m.assignment, &assign);
                let want: Vec<(String, String)> = specs
                    .vars
                    .iter()
                    .zip(&bind)
                    .filter_map(|(n, v)| v.clone().map(|v| (n.clone(), v)))
                    .collect();
                prop_assert_eq!(m.vars, want);
            }
            (e, g) => prop_assert!(false, "brute force {:?}, matcher {:?}", e, g),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
    /// Bigger inputs, where the search backtracks enough for the matching check and the memo to
    /// take part.
    #[test]
    fn agrees_with_brute_force_on_bigger_inputs(
        lines in prop::collection::vec(hw_line(), 6..16),
        spec_lines in prop::collection::vec(spec_line(), 4..9),
    ) {
        let hw: HardwareList = lines.into_iter().collect();
        let specs = Specs::parse(&format!("[{}]", spec_lines.join(", ")), "p").unwrap();
        let expected = brute(&specs, &hw).map(|(a, _)| a);
        let got = match_specs(&specs, &hw).map(|m| m.assignment);
        prop_assert_eq!(got, expected);
    }
}
