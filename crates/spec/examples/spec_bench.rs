//! The spec engine on the benchmark inputs of `bench/gen_fixtures.py` (run by `make bench`).
//! Prints one JSON object per case, like `bench/py_spec.py`, so the two can be put side by side.

use std::path::Path;
use std::time::Instant;

use edeploy_hw::HardwareList;
use edeploy_spec::cmdb::Cmdb;
use edeploy_spec::matcher::{match_indexed, HwIndex};
use edeploy_spec::state::State;
use edeploy_spec::Specs;

// The allocator of the edeploy binaries, so that the figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn emit(case: &str, seconds: f64, runs: usize) {
    println!("{{\"case\": \"{case}\", \"seconds\": {seconds:.9}, \"runs\": {runs}}}");
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: spec_bench DIR");
    let d = Path::new(&dir);
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // `spec_bench DIR generate|write N`: only N rounds of one generate case, untimed, so that
    // `valgrind --tool=callgrind` counts the instructions of that case alone (wall clock is noisy
    // on a shared machine; instruction counts are not).
    if let Some(case) = std::env::args().nth(2) {
        let rounds: usize = std::env::args().nth(3).map_or(1, |n| n.parse().unwrap());
        let gen_text = read(&d.join("generate.cmdb"));
        for _ in 0..rounds {
            let c = Cmdb::parse(&gen_text, "generate.cmdb").unwrap();
            match case.as_str() {
                "generate" => assert_eq!(c.entries.len(), 10_000),
                "write" => assert!(c.to_text().len() > 10_000),
                other => panic!("unknown case {other}: generate or write"),
            }
        }
        return;
    }
    let hw = HardwareList::parse(&read(&d.join("hw.json")), "hw.json").unwrap();
    let state = State::parse(&read(&d.join("config/state")), "state").unwrap();
    let texts: Vec<(String, String)> = state
        .entries
        .iter()
        .map(|(n, _)| (n.clone(), read(&d.join(format!("config/{n}.specs")))))
        .collect();

    // Same work as the python side: parse every profile's specs and match until one does.
    let pick = || {
        let index = HwIndex::new(&hw);
        for (name, text) in &texts {
            let specs = Specs::parse(text, name).unwrap();
            if match_indexed(&specs, &index).is_some() {
                assert_eq!(name, "target");
                return;
            }
        }
        panic!("no profile matched");
    };
    emit("pick", median(pick, 201), 201);

    for k in 1..=12 {
        let specs = Specs::parse(&read(&d.join(format!("adversarial/k{k}.specs"))), "adv").unwrap();
        let adv = || assert!(match_indexed(&specs, &HwIndex::new(&hw)).is_none());
        emit(&format!("adversarial k={k}"), median(adv, 101), 101);
    }

    let gen_text = read(&d.join("generate.cmdb"));
    let gen = || {
        assert_eq!(
            Cmdb::parse(&gen_text, "generate.cmdb")
                .unwrap()
                .entries
                .len(),
            10_000
        )
    };
    emit("generate 10000", median(gen, 21), 21);
    // What the server does the first time a generate() CMDB is used: expand, then write the file.
    let gen_write = || {
        assert!(
            Cmdb::parse(&gen_text, "generate.cmdb")
                .unwrap()
                .to_text()
                .len()
                > 10_000
        )
    };
    emit("generate+write 10000", median(gen_write, 21), 21);
}
