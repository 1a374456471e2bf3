//! `bench/agent.sh`: plan computation for a tree of 10,000 deployments (goal < 20 ms), and, with
//! `--zookeeper`, the time from a `/hosts` version bump to the agent's first command (goal
//! < 50 ms) against a real ZooKeeper started here.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use edeploy_agent::backend::Backend;
use edeploy_agent::exec::Runner;
use edeploy_agent::plan::{self, Identity, Installed};
use edeploy_agent::run::{Agent, Config};
use edeploy_agent::store::zk::ZkStore;
use edeploy_agent::store::Store;
use edeploy_agent::testkit::ZkServer;
use edeploy_agent::tree::Node;
use edeploy_agent::treefmt;

fn me() -> Identity {
    Identity {
        id: "424242424242".into(),
        name: "bench.example.com".into(),
        role: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn big_tree(apps: usize) -> Node {
    let mut text = String::from("/hosts\n  version = '1'\n");
    for i in 0..apps {
        text.push_str(&format!(
            "/cust{}\n  /app{i} : pkg{} sub\n    version = '1.0'\n    /deploy\n      /424242424242\n      /other{i}\n",
            i % 100,
            i % 50,
        ));
    }
    treefmt::parse(&text).expect("generated tree parses")
}

fn bench_plan() {
    let tree = big_tree(10_000);
    let installed: Vec<Installed> = (0..10_000)
        .step_by(2)
        .map(|i| Installed {
            path: format!("/cust{}/app{}", i % 100, i + 1),
            n: 0,
            app: format!("pkg{}", i % 50),
        })
        .collect();
    let had = Default::default();
    let (mut times, mut walks) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let t = Instant::now();
        let desired = plan::desired(&tree, &me()).expect("plan");
        walks.push(t.elapsed());
        let p = plan::plan(desired, &installed, &had);
        times.push(t.elapsed());
        assert_eq!(p.deploy.len(), 10_000);
    }
    let m = median(times);
    println!(
        "plan: 10000 deployments in {:.2} ms (tree walk {:.2} ms; median of 21; goal < 20 ms) {}",
        m.as_secs_f64() * 1e3,
        median(walks).as_secs_f64() * 1e3,
        if m < Duration::from_millis(20) {
            "OK"
        } else {
            "SLOW"
        }
    );
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn bench_latency() {
    let dir = tempfile::tempdir().expect("temp dir");
    let zk = ZkServer::start(dir.path());
    let root = dir.path().join("root");
    let stamps = dir.path().join("stamps");
    let script = root.join("opt/app/bin/zookeeper-deploy");
    fs::create_dir_all(script.parent().expect("parent")).expect("mkdir");
    fs::write(
        &script,
        format!("#!/bin/sh\ndate +%s%N >> '{}'\n", stamps.display()),
    )
    .expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");

    let mut admin = ZkStore::new(&zk.addr()).expect("store");
    let text =
        "/hosts\n  version = '0'\n/app : app\n  version = '1'\n  /deploy\n    /424242424242\n";
    let changes = treefmt::import_changes(
        &admin.load().expect("load"),
        "/",
        &treefmt::parse(text).expect("parse"),
        false,
    );
    admin.apply(&changes).expect("import");

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let addr = zk.addr();
    let root2 = root.clone();
    let agent = std::thread::spawn(move || {
        let cfg = Config {
            root: root2.clone(),
            run_dir: root2.join("run"),
            me: me(),
            backend: Backend::None,
            runner: Runner::default(),
            after: None,
        };
        let mut a = Agent::start(cfg, ZkStore::new(&addr).expect("store")).expect("agent");
        a.serve(&|| stop2.load(Ordering::Relaxed)).expect("serve");
    });
    // Let the agent reach version 0 first.
    std::thread::sleep(Duration::from_secs(2));
    let mut times = Vec::new();
    for v in 1..=20 {
        let before = fs::read_to_string(&stamps)
            .unwrap_or_default()
            .lines()
            .count();
        let t0 = epoch_ns();
        admin
            .update("/hosts", &mut |p| {
                p.insert("version".into(), json!(v.to_string()));
            })
            .expect("bump");
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            let text = fs::read_to_string(&stamps).unwrap_or_default();
            if let Some(line) = text.lines().nth(before) {
                break line.trim().parse::<u128>().expect("stamp");
            }
            assert!(Instant::now() < deadline, "no command after version {v}");
            std::thread::sleep(Duration::from_millis(2));
        };
        times.push(Duration::from_nanos(first.saturating_sub(t0) as u64));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    admin
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("stop"));
        })
        .expect("wake");
    agent.join().expect("agent thread");
    let m = median(times.clone());
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "latency: /hosts bump to first command {:.1} ms median, {:.1} ms max of 20 (goal < 50 ms) {}",
        m.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        if m < Duration::from_millis(50) { "OK" } else { "SLOW" }
    );
}

fn main() {
    bench_plan();
    if std::env::args().any(|a| a == "--zookeeper") {
        bench_latency();
    }
}
