//! The ZooKeeper store against a real ZooKeeper (Debian's `zookeeper` package), started here on
//! a loopback port. Fails, never skips, when ZooKeeper is not installed.

use std::time::{Duration, Instant};

use serde_json::json;

use edeploy_agent::backend::Backend;
use edeploy_agent::exec::Runner;
use edeploy_agent::plan::Identity;
use edeploy_agent::run::{Agent, Config, Outcome};
use edeploy_agent::store::zk::ZkStore;
use edeploy_agent::store::{Store, StoreError};
use edeploy_agent::testkit::{FakeHost, ZkServer};
use edeploy_agent::treefmt;

fn props(v: serde_json::Value) -> edeploy_agent::tree::Props {
    v.as_object().unwrap().clone()
}

fn third_party_delete(zk: &ZkServer, path: &str) {
    let mut other = ZkStore::new(&zk.addr()).unwrap();
    other
        .apply(&[edeploy_agent::treefmt::Change::Delete { path: path.into() }])
        .unwrap();
}

fn import(store: &mut ZkStore, text: &str, trim: bool) -> Vec<String> {
    let current = store.load().unwrap();
    let changes = treefmt::import_changes(&current, "/", &treefmt::parse(text).unwrap(), trim);
    store.apply(&changes).unwrap();
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn store_operations_on_a_real_zookeeper() {
    let dir = tempfile::tempdir().unwrap();
    let zk = ZkServer::start(dir.path());
    let mut s = ZkStore::new(&zk.addr()).unwrap();
    assert_eq!(s.props("/hosts").unwrap(), None);
    import(
        &mut s,
        "/hosts\n  version = '1'\n/cust\n  /cms : cms\n    version = '2'\n    /deploy\n      /web\n        n = 2\n",
        false,
    );
    s.register("h1", &props(json!({"name": "one", "version": null})))
        .unwrap();
    // A second agent with the same id, in another session, is refused.
    let mut other = ZkStore::new(&zk.addr()).unwrap();
    assert!(matches!(
        other.register("h1", &props(json!({}))),
        Err(StoreError::AlreadyRunning(p)) if p == "/hosts/h1"
    ));
    let tree = s.load().unwrap();
    assert!(tree.get("/hosts/h1").unwrap().ephemeral);
    assert!(!tree.get("/cust/cms").unwrap().ephemeral);
    assert!(tree.get("/zookeeper").is_none());
    assert_eq!(
        treefmt::print(None, &tree.without_ephemeral()),
        "/cust\n  /cms : cms\n    version = '2'\n    /deploy\n      /web\n        n = 2\n/hosts\n  version = '1'\n"
    );
    // Trim keeps the ephemeral host node.
    let changes = import(&mut s, "/hosts\n  version = '2'\n", true);
    assert_eq!(
        changes,
        [
            "update /hosts {version = '2'}",
            "Not deleting /hosts/h1 because it's ephemeral."
        ]
    );
    s.update("/hosts/h1", &mut |p| {
        p.insert("version".into(), json!("2"));
    })
    .unwrap();
    assert_eq!(
        other.props("/hosts/h1").unwrap().unwrap(),
        props(json!({"name": "one", "version": "2"}))
    );

    // The watch: no change → timeout; a change from another session → wakes.
    s.props("/hosts").unwrap();
    let t = Instant::now();
    assert!(!s.wait(Duration::from_millis(300)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(300));
    other
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("3"));
        })
        .unwrap();
    assert!(s.wait(Duration::from_secs(30)).unwrap());
    // A change between the read and the arming of the watch is not lost.
    s.props("/hosts").unwrap();
    other
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("4"));
        })
        .unwrap();
    assert!(s.wait(Duration::from_secs(30)).unwrap());

    // Locks exclude across sessions.
    s.lock("cms").unwrap();
    let contender = std::thread::spawn(move || {
        let t = Instant::now();
        other.lock("cms").unwrap();
        let waited = t.elapsed();
        other.unlock("cms").unwrap();
        waited
    });
    std::thread::sleep(Duration::from_millis(500));
    s.unlock("cms").unwrap();
    assert!(contender.join().unwrap() >= Duration::from_millis(400));

    // Our node deleted by hand: the next update registers it again.
    third_party_delete(&zk, "/hosts/h1");
    s.update("/hosts/h1", &mut |p| {
        p.insert("error".into(), json!("x"));
    })
    .unwrap();
    let mut check = ZkStore::new(&zk.addr()).unwrap();
    assert_eq!(
        check.props("/hosts/h1").unwrap().unwrap(),
        props(json!({"name": "one", "version": "2", "error": "x"}))
    );
    assert!(check.load().unwrap().get("/hosts/h1").unwrap().ephemeral);

    // The host node is ephemeral: gone with the session.
    drop(s);
    let mut third = ZkStore::new(&zk.addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while third.props("/hosts/h1").unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "ephemeral node outlived its session"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent(zk: &ZkServer, host: &FakeHost) -> Agent<ZkStore> {
    let mut store = ZkStore::new(&zk.addr()).unwrap();
    store.session_timeout = Duration::from_secs(4);
    let cfg = Config {
        root: host.root.clone(),
        run_dir: host.root.join("var/lib/edeploy/agent"),
        me: Identity {
            id: "424242424242".into(),
            name: "app.example.com".into(),
            role: None,
        },
        backend: Backend::Yum,
        runner: Runner {
            verbose: false,
            path: Some(host.path()),
            cwd: None,
        },
        after: None,
    };
    Agent::start(cfg, store).unwrap()
}

const APP: &str = "/cust\n  /cms : cms\n    version = '1.0'\n    /deploy\n      /424242424242\n";

#[test]
fn zookeeper_restart_and_session_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut zk = ZkServer::start(dir.path());
    let host = FakeHost::new(dir.path());
    host.publish("cms", "1.0");
    let mut admin = ZkStore::new(&zk.addr()).unwrap();
    import(
        &mut admin,
        &format!("/hosts\n  version = '1'\n{APP}"),
        false,
    );
    let mut a = agent(&zk, &host);
    assert_eq!(a.step().unwrap(), Outcome::Deployed("1".into()));
    assert_eq!(host.take_commands().len(), 5);

    // ZooKeeper goes away and comes back within the session timeout: same session.
    zk.restart();
    assert_eq!(a.step().unwrap(), Outcome::Skipped);
    assert_eq!(a.store.reconnects, 0);
    let mut admin = ZkStore::new(&zk.addr()).unwrap();
    admin
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("2"));
        })
        .unwrap();
    assert!(a.store.wait(Duration::from_secs(30)).unwrap());
    assert_eq!(a.step().unwrap(), Outcome::Deployed("2".into()));
    assert_eq!(
        host.take_commands(),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/cms 0"
        ]
    );

    // Session expiry: another client closes our session. The agent opens a new one, registers
    // again with the version it reached, and does not run version 2 again.
    let info = a.store.session().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Right after a restart the server may still be settling: retry the connect.
        let mut tries = 0;
        let thief = loop {
            match zookeeper_client::Client::connector()
                .with_session(info.clone())
                .with_connection_timeout(Duration::from_millis(1500))
                .connect(&zk.addr())
                .await
            {
                Ok(c) => break c,
                Err(e) if tries < 40 => {
                    tries += 1;
                    eprintln!("thief connect: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("cannot take over the session: {e}"),
            }
        };
        // Dropping the last handle closes the session; give the session task time to say so.
        drop(thief);
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.store.reconnects == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent never opened a new session"
        );
        a.store.wait(Duration::from_millis(200)).unwrap();
        match a.step() {
            Ok(o) => assert_eq!(o, Outcome::Skipped),
            Err(e) => panic!("step after the session was closed: {e}"),
        }
    }
    assert!(host.take_commands().is_empty());
    let node = admin.props("/hosts/424242424242").unwrap().unwrap();
    assert_eq!(node["version"], json!("2"));
    let tree = admin.load().unwrap();
    assert!(tree.get("/hosts/424242424242").unwrap().ephemeral);

    // The re-armed watch sees the next version.
    admin
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("3"));
        })
        .unwrap();
    assert!(a.store.wait(Duration::from_secs(30)).unwrap());
    assert_eq!(a.step().unwrap(), Outcome::Deployed("3".into()));

    // ZooKeeper restarts while a deploy script runs: the run finishes through the outage (its
    // lock release and host-node write retry) and the version is deployed exactly once.
    host.take_commands();
    host.slow_deploy(3);
    admin
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("4"));
        })
        .unwrap();
    drop(admin);
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        zk.restart();
        zk
    });
    assert_eq!(a.step().unwrap(), Outcome::Deployed("4".into()));
    let zk = restarter.join().unwrap();
    host.slow_deploy(0);
    assert_eq!(
        host.take_commands(),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/cms 0"
        ]
    );
    assert!(a.store.wait(Duration::from_millis(300)).is_ok());
    assert_eq!(a.step().unwrap(), Outcome::Skipped);
    assert!(host.take_commands().is_empty());
    let mut admin = ZkStore::new(&zk.addr()).unwrap();
    assert_eq!(
        admin.props("/hosts/424242424242").unwrap().unwrap()["version"],
        json!("4")
    );

    // Bumps that arrive during a run coalesce: the next run deploys the latest wish only.
    host.slow_deploy(2);
    admin
        .update("/hosts", &mut |p| {
            p.insert("version".into(), json!("5"));
        })
        .unwrap();
    let addr = zk.addr();
    let bumper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let mut admin = ZkStore::new(&addr).unwrap();
        for v in ["6", "7"] {
            admin
                .update("/hosts", &mut |p| {
                    p.insert("version".into(), json!(v));
                })
                .unwrap();
        }
    });
    assert_eq!(a.step().unwrap(), Outcome::Deployed("5".into()));
    bumper.join().unwrap();
    host.slow_deploy(0);
    assert!(a.store.wait(Duration::from_secs(5)).unwrap());
    assert_eq!(a.step().unwrap(), Outcome::Deployed("7".into()));
    assert_eq!(
        host.take_commands(),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/cms 0",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/cms 0",
        ]
    );
}
