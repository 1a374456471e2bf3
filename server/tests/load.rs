//! Races and crashes against the real embedded server: 1,000 concurrent machines for 500 CMDB
//! entries, and `kill -9` at random moments under load.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use edeploy_server::fixture;
use edeploy_spec::cmdb::Cmdb;
use edeploy_spec::state::{Count, State};

fn var(text: &str, name: &str) -> String {
    text.split(&format!("\n{name}='"))
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_string()
}

/// The CMDB's used entries as mac → hostname, checking that no MAC holds two entries.
fn used_entries(dir: &Path) -> HashMap<String, String> {
    let cmdb = Cmdb::load(&dir.join("pool.cmdb")).unwrap().unwrap();
    let mut out = HashMap::new();
    for e in &cmdb.entries {
        if e.get("used").is_some() {
            let mac = e.get("mac").and_then(|v| v.scalar_text()).unwrap();
            let host = e.get("hostname").and_then(|v| v.scalar_text()).unwrap();
            assert!(
                out.insert(mac.clone(), host).is_none(),
                "{mac} holds two entries"
            );
        }
    }
    out
}

#[test]
fn thousand_machines_for_five_hundred_entries() {
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::pool_config(d.path(), 500, None).unwrap();
    let (_p, addr) = serve(&["--config", conf.to_str().unwrap()], d.path());
    let barrier = Arc::new(Barrier::new(1000));
    let handles: Vec<_> = (0..1000u32)
        .map(|i| {
            let b = barrier.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    b.wait();
                    let mac = fixture::mac(i);
                    (mac.clone(), upload_hw(addr, "/upload", "vm", &mac))
                })
                .unwrap()
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut given: HashMap<String, String> = HashMap::new();
    let mut refused = 0;
    for (mac, r) in &results {
        match r.status {
            200 => {
                let t = r.text();
                assert_eq!(var(&t, "mac"), *mac);
                given.insert(mac.clone(), var(&t, "hostname"));
            }
            409 => {
                assert!(r.text().contains("no more entry"), "{}", r.text());
                refused += 1;
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(given.len(), 500);
    assert_eq!(refused, 500);
    let hosts: HashSet<&String> = given.values().collect();
    assert_eq!(hosts.len(), 500, "an entry was given twice");
    assert_eq!(used_entries(d.path()), given);
    State::load(&d.path().join("state")).unwrap();
    let hw: Vec<_> = std::fs::read_dir(d.path().join("hw"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(hw.len(), 1000);
    for e in hw {
        let text = std::fs::read_to_string(e.path()).unwrap();
        edeploy_hw::HardwareList::parse(&text, "hw").unwrap();
    }
}

/// A small deterministic generator: the kill moments vary, the test stays reproducible.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const POOL: u32 = 1500;

/// After a crash: the server restarts, answers at once (no stale lock), and the files say that
/// every machine told "200" holds its entry, and that entries used == quota taken.
fn check_after_restart(dir: &Path, conf: &Path, next: &AtomicU32, told: &HashMap<String, String>) {
    let (_p, addr) = serve(&["--config", conf.to_str().unwrap()], dir);
    let t0 = Instant::now();
    let mac = fixture::mac(next.fetch_add(1, Ordering::SeqCst));
    let r = upload_hw(addr, "/upload", "vm", &mac);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the first request after a restart waited {:?}",
        t0.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!dir.join(edeploy_server::store::JOURNAL).exists());
    // Hidden temp files may remain, by design: the server keeps replaced files' inodes as spares
    // for its next writes, and at restart adopts a crash's leftovers as spares instead of
    // removing them (edeploy_fsutil::Spares, where the reuse itself is tested). What a crash
    // must never leave: a temp that is not a plain file with one link (a spare is overwritten
    // later), or more per directory than the pool keeps.
    let mut per_dir: HashMap<PathBuf, usize> = HashMap::new();
    for n in walk(dir) {
        let p = dir.join(&n);
        if !edeploy_fsutil::is_temp_name(&p.file_name().unwrap().to_string_lossy()) {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.is_file() && m.nlink() == 1, "{n}: {m:?}");
        *per_dir
            .entry(p.parent().unwrap().to_path_buf())
            .or_default() += 1;
    }
    for (d, n) in &per_dir {
        assert!(
            *n <= edeploy_fsutil::Spares::CAP,
            "{}: {n} temp files",
            d.display()
        );
    }
    eprintln!("temp files (spares) after the restart: {per_dir:?}");
    let mut told = told.clone();
    told.insert(mac, var(&r.text(), "hostname"));
    let used = used_entries(dir);
    let state = State::load(&dir.join("state")).unwrap();
    let Some(Count::Left(left)) = state.count("pool") else {
        panic!("bad state {state:?}")
    };
    assert_eq!(
        used.len() as i64,
        i64::from(POOL) - left,
        "CMDB entries used and quota taken disagree"
    );
    for (mac, host) in &told {
        assert_eq!(used.get(mac), Some(host), "allocation of {mac} lost");
    }
}

#[test]
fn kill_9_under_load_loses_and_doubles_nothing() {
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::pool_config(d.path(), POOL, Some(POOL)).unwrap();
    let next = Arc::new(AtomicU32::new(0));
    let told: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut rng = Lcg(0x5eed);
    for round in 0..20 {
        let (mut p, addr): (Proc, SocketAddr) =
            serve(&["--config", conf.to_str().unwrap()], d.path());
        let before = told.lock().unwrap().len();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (stop, next, told) = (stop.clone(), next.clone(), told.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let mac = fixture::mac(next.fetch_add(1, Ordering::SeqCst));
                        let hw = fixture::hw_json("vm", &mac);
                        let body = edeploy_server::multipart::encode(
                            BOUNDARY,
                            &[("file", Some("hw.json"), hw.as_bytes())],
                        );
                        let ct = format!("multipart/form-data; boundary={BOUNDARY}");
                        match request(addr, "POST", "/upload", &ct, &body) {
                            Ok(r) if r.status == 200 => {
                                told.lock().unwrap().insert(mac, var(&r.text(), "hostname"));
                            }
                            Ok(r) => panic!("status {}: {}", r.status, r.text()),
                            Err(_) => break, // the server died under us
                        }
                    }
                })
            })
            .collect();
        // Kill at a random moment while the load flows: after a random number of answered
        // uploads (so the pool lasts 20 rounds however fast the machine), plus a random delay.
        let target = before + 1 + rng.below(40) as usize;
        let t0 = Instant::now();
        while told.lock().unwrap().len() < target && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_micros(500));
        }
        assert!(
            told.lock().unwrap().len() > before,
            "no upload answered in 30 s"
        );
        std::thread::sleep(Duration::from_micros(rng.below(5000)));
        // Child::kill is SIGKILL: no destructor, no flush, no unlock.
        p.0.kill().unwrap();
        p.0.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        if d.path().join(edeploy_server::store::JOURNAL).exists() {
            eprintln!("round {round}: killed mid-commit, the journal will be rolled forward");
        }
        eprintln!(
            "round {round}: killed after {:?}, {} answered",
            t0.elapsed(),
            told.lock().unwrap().len() - before
        );
        let told_now = told.lock().unwrap().clone();
        assert!(
            told_now.len() < POOL as usize - 200,
            "the pool is nearly used up: the test would stop measuring"
        );
        check_after_restart(d.path(), &conf, &next, &told_now);
        // The check's own machine is now allocated too: remember it.
        let used = used_entries(d.path());
        told.lock().unwrap().extend(used);
    }
}
