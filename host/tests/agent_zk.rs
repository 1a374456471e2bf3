//! The original agent's walkthrough, replayed through the `edeploy` binary against a real
//! ZooKeeper (Debian's `zookeeper` package, started here on a loopback port): every step asserts
//! the exact ordered commands the fake `yum` and `zookeeper-deploy` scripts recorded.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use edeploy_agent::store::zk::ZkStore;
use edeploy_agent::store::Store;
use edeploy_agent::testkit::{FakeHost, ZkServer};

const ID: &str = "424242424242";
const BIN: &str = env!("CARGO_BIN_EXE_edeploy");

/// A running `edeploy agent`, killed and waited for on drop.
struct AgentProc {
    child: Child,
    stderr: PathBuf,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProc {
    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

struct World {
    dir: tempfile::TempDir,
    zk: ZkServer,
    host: FakeHost,
    admin: ZkStore,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let zk = ZkServer::start(dir.path());
    let host = FakeHost::new(dir.path());
    let admin = ZkStore::new(&zk.addr()).unwrap();
    World {
        dir,
        zk,
        host,
        admin,
    }
}

impl World {
    fn edeploy(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("--root")
            .arg(&self.host.root)
            .args(args)
            .env("PATH", self.host.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `edeploy zk import --trim` of a tree text.
    fn import(&self, text: &str) {
        let file = self.dir.path().join("import.zk");
        fs::write(&file, text).unwrap();
        let out = self.edeploy(&[
            "zk",
            "import",
            "--trim",
            "--zookeeper",
            &self.zk.addr(),
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn_agent(&self, name: &str, extra: &[&str]) -> AgentProc {
        let stderr = self.dir.path().join(format!("agent-{name}.log"));
        let child = Command::new(BIN)
            .arg("--root")
            .arg(&self.host.root)
            .args(["agent", "--zookeeper", &self.zk.addr()])
            .args(["--host-name", "app.example.com"])
            .args(extra)
            .env("PATH", self.host.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        AgentProc { child, stderr }
    }

    fn host_node(&mut self, id: &str) -> Option<serde_json::Value> {
        self.admin
            .props(&format!("/hosts/{id}"))
            .unwrap()
            .map(serde_json::Value::Object)
    }

    fn cluster_version(&mut self) -> serde_json::Value {
        self.admin.props("/hosts").unwrap().unwrap()["version"].clone()
    }

    /// Waits until the host node satisfies `ok` (bounded).
    fn wait_host(&mut self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.host_node(ID).is_some_and(|n| ok(&n)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; host node {:?}",
                self.host_node(ID)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn deploy_version(&mut self, version: &str, body: &str) -> Vec<String> {
        self.import(&format!("/hosts\n  version = '{version}'\n{body}"));
        self.wait_host(&format!("version {version}"), |n| {
            n["version"] == json!(version)
        });
        self.host.take_commands()
    }

    fn fail_version(&mut self, version: &str, body: &str) -> (String, Vec<String>) {
        self.import(&format!("/hosts\n  version = '{version}'\n{body}"));
        let status = self.host.root.join("var/lib/edeploy/agent/status");
        let failed = format!(" {version} failed\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !fs::read_to_string(&status).is_ok_and(|s| s.ends_with(&failed)) {
            assert!(Instant::now() < deadline, "version {version} never failed");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The status is written last: the store already holds the all-stop and the error.
        assert_eq!(
            self.cluster_version(),
            json!(null),
            "all stop after a failure"
        );
        let error = self.host_node(ID).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        (error, self.host.take_commands())
    }
}

fn cms(n: u32, version: &str, extra: &str) -> String {
    format!(
        "/cust\n  /someapp\n    /cms : cms\n      version = '{version}'\n      /deploy\n        /{ID}\n          n = {n}\n{extra}"
    )
}

const MONITOR: &str =
    "  /cust2\n    /mon : monitor-2.0 web\n      /deploy\n        /app.example.com\n";

#[test]
fn walkthrough_against_real_zookeeper() {
    let mut w = world();
    for (p, v) in [
        ("cms", "1.0.0"),
        ("cms", "1.1.0"),
        ("cms", "0.9.0"),
        ("monitor", "2.0"),
    ] {
        w.host.publish(p, v);
    }
    w.import(&format!(
        "/hosts\n  version = None\n{}",
        cms(2, "1.0.0", MONITOR)
    ));
    let agent = w.spawn_agent("main", &["--host-id", ID, "-v"]);

    // Registration: an ephemeral host node at no version; nothing runs while the wish is None.
    w.wait_host("registration", |n| {
        *n == json!({"name": "app.example.com", "version": null})
    });
    let print = w.edeploy(&["zk", "print", "/hosts", "--zookeeper", &w.zk.addr()]);
    assert_eq!(
        String::from_utf8_lossy(&print.stdout),
        format!("/hosts\n  version = None\n  /{ID} # ephemeral\n    name = 'app.example.com'\n    version = None\n")
    );
    let export = w.edeploy(&["zk", "export", "/hosts", "--zookeeper", &w.zk.addr()]);
    assert_eq!(
        String::from_utf8_lossy(&export.stdout),
        "/hosts\n  version = None\n"
    );
    // A second agent for the same host is refused.
    let second = w.edeploy(&[
        "agent",
        "--run-once",
        "--zookeeper",
        &w.zk.addr(),
        "--host-id",
        ID,
        "--host-name",
        "x",
        "--register-wait",
        "0",
    ]);
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains(&format!(
        "another agent is running: /hosts/{ID} is registered"
    )));
    assert!(w.host.take_commands().is_empty());

    // First version: packages by name, then every deployment by (path, n); versions in type.
    assert_eq!(
        w.deploy_version("1", &cms(2, "1.0.0", MONITOR)),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-1.0.0",
            "yum -q list installed cms",
            "yum -q list installed monitor",
            "yum -y install monitor-2.0",
            "yum -q list installed monitor",
            "/opt/monitor/bin/zookeeper-deploy -r web /cust/cust2/mon 0",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 1",
        ]
    );
    assert_eq!(
        w.host.files("/etc"),
        [
            "cms/cust,someapp,cms.0.deployed",
            "cms/cust,someapp,cms.1.deployed",
            "monitor/cust,cust2,mon.0.deployed"
        ]
    );
    // Verbose: successful commands' output is logged too.
    assert!(
        agent.log().contains("Installed cms-1.0.0"),
        "{}",
        agent.log()
    );

    // n down, monitor removed: -u sorted by path, then packages, deploys, uninstall.
    assert_eq!(
        w.deploy_version("2", &cms(1, "1.1.0", "")),
        [
            "/opt/monitor/bin/zookeeper-deploy -u /cust/cust2/mon 0",
            "/opt/cms/bin/zookeeper-deploy -u /cust/someapp/cms 1",
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-1.1.0",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "yum -y remove monitor",
        ]
    );
    assert_eq!(w.host.files("/etc"), ["cms/cust,someapp,cms.0.deployed"]);
    assert!(!w.host.root.join("etc/monitor").exists());

    // n up and a downgrade.
    assert_eq!(
        w.deploy_version("3", &cms(3, "0.9.0", "")),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-0.9.0",
            "yum -q list installed cms",
            "yum -y downgrade cms-0.9.0",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 1",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 2",
        ]
    );

    // Conflicts abort the version before any command; all stop; the host keeps version 3.
    let conflict = cms(1, "0.9.0", "").replace(
        &format!("        /{ID}\n"),
        &format!("        /{ID}\n        /app.example.com\n"),
    );
    let (error, cmds) = w.fail_version("4", &conflict);
    assert_eq!(
        error,
        format!("Conflicting deployments for /cust/someapp/cms. Can't deploy to app.example.com and {ID}.")
    );
    assert!(cmds.is_empty());
    assert_eq!(w.host_node(ID).unwrap()["version"], json!("3"));
    assert!(agent.log().contains("FAILED deploying version 4"));

    let inconsistent = format!(
        "{}  /other : cms\n    version = '1.1.0'\n    /deploy\n      /{ID}\n",
        cms(1, "0.9.0", "")
    );
    let (error, _) = w.fail_version("5", &inconsistent);
    assert_eq!(error, "Inconsistent versions for cms. 0.9.0 != 1.1.0");

    // A failing package install: the failing command's output is the error.
    let (error, cmds) = w.fail_version("6", &cms(1, "5.5.5", ""));
    assert_eq!(
        error,
        "Command failed (exit status: 1): yum -y install cms-5.5.5\nNo package cms-5.5.5 available.\n"
    );
    assert_eq!(
        cmds,
        [
            "/opt/cms/bin/zookeeper-deploy -u /cust/someapp/cms 1",
            "/opt/cms/bin/zookeeper-deploy -u /cust/someapp/cms 2",
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-5.5.5"
        ]
    );
    assert!(agent.log().contains("No package cms-5.5.5 available."));

    // A failing deploy script.
    w.host.break_deploy("/cust/someapp/cms", 1, true);
    let (error, cmds) = w.fail_version("7", &cms(2, "0.9.0", ""));
    assert_eq!(
        error,
        format!(
            "Command failed (exit status: 1): {}/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 1\ndeploy of /cust/someapp/cms 1 broke\n",
            w.host.root.display()
        )
    );
    assert_eq!(
        cmds,
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 1",
        ]
    );
    w.host.break_deploy("/cust/someapp/cms", 1, false);

    // Fixed: the next version clears the error.
    assert_eq!(
        w.deploy_version("8", &cms(2, "0.9.0", "")),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 1",
        ]
    );
    assert_eq!(w.host_node(ID).unwrap().get("error"), None);

    // A checkout instead of a package.
    assert_eq!(
        w.deploy_version("9", &cms(1, "git://git.example.com/cms.git#v9", "")),
        [
            "/opt/cms/bin/zookeeper-deploy -u /cust/someapp/cms 1",
            "yum -q list installed cms",
            "yum -y remove cms",
            "git clone -q git://git.example.com/cms.git /opt/cms",
            "git -C /opt/cms checkout -q v9",
            "stage-build in /opt/cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
        ]
    );
    // Another checkout, then back to a package: no package manager call while it is a
    // checkout, and the checkout goes before the package comes.
    assert_eq!(
        w.deploy_version("10", &cms(1, "svn+ssh://svn.example.com/cms/trunk", "")),
        [
            "svn co -q svn+ssh://svn.example.com/cms/trunk /opt/cms",
            "stage-build in /opt/cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
        ]
    );
    assert_eq!(
        w.deploy_version("11", &cms(1, "1.1.0", "")),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-1.1.0",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
        ]
    );
    assert!(w.host.root.join("opt/cms/bin/zookeeper-deploy").exists());
    assert!(!w.host.root.join("opt/cms/stage-build").exists());
    drop(agent);
}

#[test]
fn roles_new_hosts_and_run_once() {
    let mut w = world();
    w.host.publish("cms", "1.0");
    let body = format!("/cust\n  /cms : cms\n    version = '1.0'\n    /deploy\n      /web\n        n = 2\n      /{ID}\n");
    w.import(&format!("/hosts\n  version = '1'\n{body}"));
    // With a role, a host-based deployment is an error.
    let out = w.edeploy(&[
        "agent",
        "--run-once",
        "--zookeeper",
        &w.zk.addr(),
        "--host-id",
        ID,
        "--host-name",
        "app.example.com",
        "--role",
        "web",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED deploying version 1"));
    assert_eq!(w.cluster_version(), json!(null));
    assert!(w.host.take_commands().is_empty());
    // The run-once agent's node went with its session; the error is in its status file.
    let status = fs::read_to_string(w.host.root.join("var/lib/edeploy/agent/status")).unwrap();
    assert!(status.ends_with(" 1 failed\n"), "{status}");

    // Role-based only: a new host (id given by the hand-off file) deploys n = 2, run once.
    fs::create_dir_all(w.host.root.join("var/lib/edeploy")).unwrap();
    fs::write(
        w.host.root.join("var/lib/edeploy/conf"),
        "VERS=1\nPXEMAC=52:54:00:AA:BB:CC\nAGENT_ROLE=web\n",
    )
    .unwrap();
    w.import(&format!(
        "/hosts\n  version = '2'\n{}",
        body.replace(&format!("      /{ID}\n"), "")
    ));
    let out = w.edeploy(&[
        "agent",
        "--run-once",
        "--zookeeper",
        &w.zk.addr(),
        "--host-name",
        "new.example.com",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.host.take_commands(),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-1.0",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/cms 0",
            "/opt/cms/bin/zookeeper-deploy /cust/cms 1",
        ]
    );
    let hv = fs::read_to_string(w.host.root.join("var/lib/edeploy/agent/host_version")).unwrap();
    assert!(hv.starts_with("{\"version\":\"2\""), "{hv}");
    // Run once again at the same version: nothing.
    let out = w.edeploy(&[
        "agent",
        "--run-once",
        "--zookeeper",
        &w.zk.addr(),
        "--host-name",
        "new.example.com",
    ]);
    assert!(out.status.success());
    assert!(w.host.take_commands().is_empty());

    // A long-running agent registers the new host with its role and reached version.
    let _agent = w.spawn_agent("new", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.host_node("525400aabbcc").is_none() {
        assert!(Instant::now() < deadline, "new host never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        w.host_node("525400aabbcc").unwrap(),
        json!({"name": "app.example.com", "version": "2", "role": "web"})
    );

    // SIGTERM: the agent exits between runs and closes its session, so its node goes at once.
    let mut agent = _agent;
    // SAFETY: signalling our own child by pid.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) },
        0
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "agent ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert_eq!(w.host_node("525400aabbcc"), None);

    // The check: in sync.
    let out = w.edeploy(&["agent", "check", "--zookeeper", &w.zk.addr()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OK in sync at version 2\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

/// A running agent process that has deployed version 1 of one application (its five commands
/// consumed); returns the world, the application's tree text and the agent.
fn agent_at_version_1(name: &str) -> (World, String, AgentProc) {
    let mut w = world();
    w.host.publish("cms", "1.0");
    let body = format!("/app : cms\n  version = '1.0'\n  /deploy\n    /{ID}\n");
    w.import(&format!("/hosts\n  version = '1'\n{body}"));
    let agent = w.spawn_agent(name, &["--host-id", ID]);
    w.wait_host("version 1", |n| n["version"] == json!("1"));
    assert_eq!(w.host.take_commands().len(), 5);
    (w, body, agent)
}

#[test]
fn agent_process_rides_through_a_zookeeper_restart() {
    let (mut w, body, agent) = agent_at_version_1("restart");

    w.zk.restart();
    w.admin = ZkStore::new(&w.zk.addr()).unwrap();
    assert_eq!(
        w.deploy_version("2", &body),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /app 0"
        ]
    );
    // Still registered (same session, or a new one with the version it reached).
    assert_eq!(
        w.host_node(ID).unwrap(),
        json!({"name": "app.example.com", "version": "2"})
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.host.take_commands().is_empty(), "{}", agent.log());
}

#[test]
fn agent_process_survives_session_expiry() {
    let (mut w, body, agent) = agent_at_version_1("expiry");

    // A ZooKeeper that forgot everything: the agent's session is expired on reconnect. It opens
    // a new one and registers again with the version it reached.
    w.zk.restart_empty();
    w.admin = ZkStore::new(&w.zk.addr()).unwrap();
    w.wait_host("registration in a new session", |n| {
        *n == json!({"name": "app.example.com", "version": "1"})
    });
    // The operator restores the tree at the same version: nothing runs again.
    w.import(&format!("/hosts\n  version = '1'\n{body}"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.host.take_commands().is_empty(), "{}", agent.log());
    // The watch was re-armed in the new session.
    assert_eq!(
        w.deploy_version("2", &body),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /app 0"
        ]
    );
}
