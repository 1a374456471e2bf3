//! Why a machine did or did not match a profile, spec line by spec line.
//!
//! On a match: for every spec line, the hardware line that satisfied it and what it bound. On no
//! match, the first cause found, in this order: a spec line that no hardware line can ever satisfy;
//! spec lines competing for too few hardware lines; otherwise the deepest partial assignment the
//! search reached and the spec line it could not get past, with the closest hardware lines and
//! what is wrong with each.

use std::collections::HashMap;
use std::fmt::Write;

use edeploy_hw::{HardwareList, HwLine};
use serde::Serialize;

use crate::element::Element;
use crate::matcher::{HwIndex, Search};
use crate::specs::Specs;

/// The outcome of one spec line.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Matched,
    Failed,
    NotReached,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineReport {
    /// 1-based position in the specs file.
    pub spec: usize,
    pub line: usize,
    pub text: [String; 4],
    pub status: Status,
    /// The hardware line taken (when matched).
    pub hw: Option<[String; 4]>,
    /// Variables this line bound.
    pub binds: Vec<(String, String)>,
    /// Why it failed (when failed).
    pub reason: Option<String>,
    /// The closest hardware lines and what is wrong with each (when failed).
    pub closest: Vec<Near>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Near {
    pub hw: [String; 4],
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub file: String,
    pub matched: bool,
    pub lines: Vec<LineReport>,
}

/// How many search nodes the explanation may spend to find the deepest partial assignment.
const BUDGET: u64 = 200_000;

pub fn explain(specs: &Specs, hw: &HardwareList) -> Explanation {
    let index = HwIndex::new(hw);
    let lines = hw.lines();
    let mut search = Search::new(specs, &index);
    let matched = search.run();
    if matched {
        let reports = specs
            .lines
            .iter()
            .enumerate()
            .map(|(i, _)| LineReport::matched(specs, i, &lines[search.assign[i]]))
            .collect();
        return Explanation {
            file: specs.file.clone(),
            matched,
            lines: reports,
        };
    }
    // The deepest partial assignment of a plain depth-first walk gives the context.
    let mut plain = Search::new(specs, &index);
    plain.plain = true;
    plain.budget = BUDGET;
    plain.run();
    let (depth, assign, binds) = plain.deepest.clone();
    // A line nothing can satisfy is the cause, whatever happened before it.
    if let Some(i) = search.cands.iter().position(Vec::is_empty) {
        let reason = "no hardware line satisfies it, whatever the variables hold".to_string();
        let (assign, binds) = if i <= depth {
            (&assign[..i], binds.clone())
        } else {
            (&[][..], vec![None; specs.vars.len()])
        };
        return failure(specs, lines, assign, &binds, i, reason);
    }
    let exhausted = plain.nodes > BUDGET;
    let competing = plain.cands[depth].iter().all(|c| assign.contains(&c.hw));
    let reason = if competing {
        "the spec lines compete for too few hardware lines: each hardware line satisfies at most one spec line"
            .to_string()
    } else {
        format!(
            "no unused hardware line satisfies it with the bindings above{}",
            if exhausted {
                " (search budget spent: later choices were not all tried)"
            } else {
                ""
            }
        )
    };
    failure(specs, lines, &assign, &binds, depth, reason)
}

fn bound_by(specs: &Specs, i: usize, hw: &HwLine) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for k in 0..4 {
        if let Some(id) = specs.lines[i].var_ids[k] {
            let pair = (specs.vars[id].clone(), hw[k].clone());
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    out
}

impl LineReport {
    fn new(specs: &Specs, i: usize, status: Status) -> LineReport {
        let l = &specs.lines[i];
        LineReport {
            spec: i + 1,
            line: l.line,
            text: l.text.clone(),
            status,
            hw: None,
            binds: Vec::new(),
            reason: None,
            closest: Vec::new(),
        }
    }

    fn matched(specs: &Specs, i: usize, hw: &HwLine) -> LineReport {
        LineReport {
            hw: Some(hw.0.clone()),
            binds: bound_by(specs, i, hw),
            ..LineReport::new(specs, i, Status::Matched)
        }
    }
}

/// The report of a failed match: lines before `failed` as the partial assignment took them, the
/// failed line with its closest candidates, the rest not reached.
fn failure(
    specs: &Specs,
    lines: &[HwLine],
    assign: &[usize],
    binds: &[Option<&str>],
    failed: usize,
    reason: String,
) -> Explanation {
    let reports = (0..specs.lines.len())
        .map(|i| {
            if i < assign.len() && i < failed {
                LineReport::matched(specs, i, &lines[assign[i]])
            } else if i == failed {
                LineReport {
                    reason: Some(reason.clone()),
                    closest: closest(specs, i, lines, binds, assign),
                    ..LineReport::new(specs, i, Status::Failed)
                }
            } else {
                LineReport::new(specs, i, Status::NotReached)
            }
        })
        .collect();
    Explanation {
        file: specs.file.clone(),
        matched: false,
        lines: reports,
    }
}

/// The hardware lines that come closest to satisfying spec line `i`: those with the same category
/// and key (or, when there are none, the same category), fewest problems first, then list order;
/// at most three.
fn closest(
    specs: &Specs,
    i: usize,
    lines: &[HwLine],
    binds: &[Option<&str>],
    assign: &[usize],
) -> Vec<Near> {
    let spec = &specs.lines[i];
    let owner: HashMap<usize, usize> = assign.iter().enumerate().map(|(s, &h)| (h, s)).collect();
    let problems_of = |h: usize, line: &HwLine| {
        let mut problems: Vec<String> = (0..4)
            .filter_map(|k| {
                element_problem(specs, &spec.elements[k], spec.var_ids[k], &line[k], binds)
            })
            .collect();
        if assign.contains(&h) {
            let by = owner
                .get(&h)
                .map_or(String::new(), |s| format!(" by spec line {}", s + 1));
            problems.push(format!("already taken{by}"));
        }
        problems
    };
    let same_cat = |l: &HwLine| spec.elements[0].test(&l[0]);
    let same_key = |l: &HwLine| same_cat(l) && spec.elements[2].test(&l[2]);
    let pick = |keep: &dyn Fn(&HwLine) -> bool| -> Vec<(usize, usize, Vec<String>)> {
        let mut v: Vec<_> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| keep(l))
            .map(|(h, l)| {
                let p = problems_of(h, l);
                (p.len(), h, p)
            })
            .collect();
        v.sort_by_key(|(n, h, _)| (*n, *h));
        v
    };
    let mut scored = pick(&same_key);
    if scored.is_empty() {
        scored = pick(&same_cat);
    }
    scored
        .into_iter()
        .take(3)
        .map(|(_, h, problems)| Near {
            hw: lines[h].0.clone(),
            problems,
        })
        .collect()
}

fn element_problem(
    specs: &Specs,
    e: &Element,
    var: Option<usize>,
    value: &str,
    binds: &[Option<&str>],
) -> Option<String> {
    if !e.test(value) {
        return Some(match e {
            Element::Literal(l) => format!("'{value}' is not '{l}'"),
            Element::Func(_) => format!("'{value}' fails {}", func_text(e)),
            Element::VarFunc { .. } => format!("'{value}' fails {}", func_text(e)),
            Element::Var { .. } => unreachable!("a bare variable accepts any value"),
        });
    }
    let id = var?;
    match binds.get(id).copied().flatten() {
        Some(b) if b != value => Some(format!("${} is '{b}', not '{value}'", specs.vars[id])),
        _ => None,
    }
}

fn func_text(e: &Element) -> String {
    match e {
        Element::Func(_) | Element::VarFunc { .. } => format!("{e}"),
        _ => String::new(),
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Element::Literal(l) => write!(f, "'{l}'"),
            Element::Var { name, pref } => write!(f, "{}{name}", if *pref { "$$" } else { "$" }),
            Element::Func(e) | Element::VarFunc { func: e, .. } => write!(f, "{}", expr_text(e)),
        }
    }
}

fn expr_text(e: &crate::element::Expr) -> String {
    use crate::element::{Arg, CmpOp, Expr};
    let arg = |a: &Arg| match a {
        Arg::Func(f) => expr_text(f),
        Arg::Literal(l) => format!("'{l}'"),
    };
    match e {
        Expr::Cmp(op, v) => {
            let n = match op {
                CmpOp::Gt => "gt",
                CmpOp::Ge => "ge",
                CmpOp::Lt => "lt",
                CmpOp::Le => "le",
            };
            format!("{n}({v})")
        }
        Expr::In(v) => format!(
            "in({})",
            v.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Expr::Network(n) => format!("network({n})"),
        Expr::Regexp(r) => format!("regexp({})", r.as_str()),
        Expr::Range(a, b) => format!("range({a}, {b})"),
        Expr::Not(a) => format!("not({})", arg(a)),
        Expr::And(v) => format!("and({})", v.iter().map(arg).collect::<Vec<_>>().join(", ")),
        Expr::Or(v) => format!("or({})", v.iter().map(arg).collect::<Vec<_>>().join(", ")),
        Expr::Unknown(n) => format!("{n}(...) (unknown function)"),
    }
}

fn tuple(t: &[String; 4]) -> String {
    edeploy_literal::to_python_compact(&edeploy_literal::Value::Tuple(
        t.iter()
            .map(|s| edeploy_literal::Value::Str(s.into()))
            .collect(),
    ))
}

impl Explanation {
    /// Human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.matched { "MATCH" } else { "NO MATCH" };
        let _ = writeln!(out, "{}: {verdict}", self.file);
        for r in &self.lines {
            let mark = match r.status {
                Status::Matched => "ok",
                Status::Failed => "FAIL",
                Status::NotReached => "--",
            };
            let _ = writeln!(
                out,
                "  {mark:>4} {:>3}  {}  (line {})",
                r.spec,
                tuple(&r.text),
                r.line
            );
            if let Some(h) = &r.hw {
                let b = r
                    .binds
                    .iter()
                    .map(|(k, v)| format!("${k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    out,
                    "             <- {}{}{}",
                    tuple(h),
                    if b.is_empty() { "" } else { "  " },
                    b
                );
            }
            if let Some(reason) = &r.reason {
                let _ = writeln!(out, "             {reason}");
                if r.closest.is_empty() {
                    let _ = writeln!(
                        out,
                        "             no hardware line comes close (same category, most elements)"
                    );
                }
                for n in &r.closest {
                    let _ = writeln!(
                        out,
                        "             closest: {}: {}",
                        tuple(&n.hw),
                        n.problems.join("; ")
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(lines: &[[&str; 4]]) -> HardwareList {
        HardwareList::from_rows(lines)
    }

    #[test]
    fn a_match_lists_each_line_and_its_bindings() {
        let h = hw(&[
            ["disk", "vda", "size", "20"],
            ["system", "product", "vendor", "QEMU"],
        ]);
        let s = Specs::parse(
            "[('disk', '$disk', 'size', 'gt(4)'), ('system', 'product', 'vendor', 'QEMU')]",
            "vm.specs",
        )
        .unwrap();
        let e = explain(&s, &h);
        assert!(e.matched);
        assert_eq!(e.lines[0].binds, [("disk".to_string(), "vda".to_string())]);
        let t = e.to_text();
        assert!(t.starts_with("vm.specs: MATCH\n"), "{t}");
        assert!(
            t.contains("<- ('disk', 'vda', 'size', '20')  $disk=vda"),
            "{t}"
        );
    }

    #[test]
    fn an_impossible_line_names_its_closest_candidates() {
        let h = hw(&[["disk", "vda", "size", "20"], ["disk", "vdb", "size", "8"]]);
        let s = Specs::parse("[('disk', '$disk', 'size', 'gt(100)')]", "vm.specs").unwrap();
        let e = explain(&s, &h);
        assert!(!e.matched);
        assert_eq!(e.lines[0].status, Status::Failed);
        assert_eq!(e.lines[0].closest.len(), 2);
        assert_eq!(e.lines[0].closest[0].problems, ["'20' fails gt(100)"]);
        assert!(e
            .to_text()
            .contains("closest: ('disk', 'vda', 'size', '20'): '20' fails gt(100)"));
    }

    #[test]
    fn a_variable_conflict_shows_the_binding() {
        let h = hw(&[
            ["disk", "sda", "size", "20"],
            ["disk", "sda", "model", "HDD"],
        ]);
        let s = Specs::parse(
            "[('disk', '$d', 'size', '20'), ('disk', '$d', 'model', 'SSD')]",
            "p",
        )
        .unwrap();
        let e = explain(&s, &h);
        assert_eq!(e.lines[0].status, Status::Matched);
        assert_eq!(e.lines[1].status, Status::Failed);
        let t = e.to_text();
        assert!(t.contains("'HDD' is not 'SSD'"), "{t}");
    }

    #[test]
    fn competition_is_named() {
        let h = hw(&[["disk", "sda", "size", "20"]]);
        let s = Specs::parse(
            "[('disk', '$a', 'size', '20'), ('disk', '$b', 'size', '20')]",
            "p",
        )
        .unwrap();
        let e = explain(&s, &h);
        assert_eq!(e.lines[1].status, Status::Failed);
        let t = e.to_text();
        assert!(t.contains("compete"), "{t}");
        assert!(t.contains("already taken by spec line 1"), "{t}");
        assert_eq!(e.lines[2..].len(), 0);
    }
}
