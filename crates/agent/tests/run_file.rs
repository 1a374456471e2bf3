//! Deploy runs over the file store, against fake `yum`, `svn`, `git` and `zookeeper-deploy`
//! scripts that record every command in order.

use std::fs;
use std::path::PathBuf;

use edeploy_agent::backend::Backend;
use edeploy_agent::exec::Runner;
use edeploy_agent::plan::Identity;
use edeploy_agent::run::{Agent, Config, Outcome};
use edeploy_agent::store::file::FileStore;
use edeploy_agent::testkit::FakeHost;
use edeploy_agent::treefmt;

const ID: &str = "424242424242";

struct Fixture {
    _dir: tempfile::TempDir,
    host: FakeHost,
    tree: PathBuf,
    agent: Agent<FileStore>,
}

fn fixture(role: Option<&str>, tree: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new(dir.path());
    let file = dir.path().join("tree");
    fs::write(&file, tree).unwrap();
    let cfg = Config {
        root: host.root.clone(),
        run_dir: host.root.join("var/lib/edeploy/agent"),
        me: Identity {
            id: ID.into(),
            name: "app.example.com".into(),
            role: role.map(Into::into),
        },
        backend: Backend::Yum,
        runner: Runner {
            verbose: false,
            path: Some(host.path()),
            cwd: None,
        },
        after: None,
    };
    let agent = Agent::start(cfg, FileStore::new(&file)).unwrap();
    Fixture {
        _dir: dir,
        host,
        tree: file,
        agent,
    }
}

impl Fixture {
    /// Replaces the tree file's content, keeping the host node the agent wrote.
    fn set_tree(&mut self, text: &str) {
        let current = treefmt::parse(&self.tree_text()).unwrap();
        let mut new = treefmt::parse(text).unwrap();
        let me = format!("/hosts/{ID}");
        if let Some(host) = current.get(&me) {
            *new.ensure(&me) = host.clone();
        }
        fs::write(&self.tree, treefmt::print(None, &new)).unwrap();
    }

    fn tree_text(&self) -> String {
        fs::read_to_string(&self.tree).unwrap()
    }

    fn host_node(&self) -> String {
        let t = treefmt::parse(&self.tree_text()).unwrap();
        treefmt::print(None, t.get(&format!("/hosts/{ID}")).unwrap())
    }
}

fn tree(version: &str, body: &str) -> String {
    format!("/hosts\n  version = {version}\n{body}")
}

const CMS_2: &str = "\
/cust
  /someapp
    /cms : cms
      version = '1.0.0'
      /deploy
        /424242424242
          n = 2
  /cust2
    /mon : monitor web
      version = '2.0'
      /deploy
        /app.example.com
";

#[test]
fn first_deploy_then_n_down_removal_and_uninstall() {
    let mut f = fixture(None, &tree("None", CMS_2));
    assert_eq!(f.agent.step().unwrap(), Outcome::Skipped);
    assert!(f.host.take_commands().is_empty());
    assert_eq!(f.host_node(), "name = 'app.example.com'\nversion = None\n");

    f.host.publish("cms", "1.0.0");
    f.host.publish("monitor", "2.0");
    f.set_tree(&tree("'1'", CMS_2));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("1".into()));
    assert_eq!(
        f.host.take_commands(),
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
        f.host.files("/etc"),
        [
            "cms/cust,someapp,cms.0.deployed",
            "cms/cust,someapp,cms.1.deployed",
            "monitor/cust,cust2,mon.0.deployed"
        ]
    );
    assert_eq!(f.host_node(), "name = 'app.example.com'\nversion = '1'\n");
    assert_eq!(f.agent.host_version(), Some("1"));
    // Same version: nothing runs.
    assert_eq!(f.agent.step().unwrap(), Outcome::Skipped);
    assert!(f.host.take_commands().is_empty());

    // n down to 1, monitor gone: its -u runs, its package goes, /etc/monitor goes.
    fs::write(
        f.host.root.join("etc/cms/cust,someapp,cms.1.script"),
        "generated",
    )
    .unwrap();
    let body = CMS_2.replace("n = 2", "n = 1");
    let body = &body[..body.find("  /cust2").unwrap()];
    f.set_tree(&tree("'2'", body));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("2".into()));
    assert_eq!(
        f.host.take_commands(),
        [
            "/opt/monitor/bin/zookeeper-deploy -u /cust/cust2/mon 0",
            "/opt/cms/bin/zookeeper-deploy -u /cust/someapp/cms 1",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "yum -y remove monitor",
        ]
    );
    assert_eq!(f.host.files("/etc"), ["cms/cust,someapp,cms.0.deployed"]);
    assert!(!f.host.root.join("etc/monitor").exists());

    // n back up to 3.
    f.set_tree(&tree("'3'", &body.replace("n = 1", "n = 3")));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("3".into()));
    assert_eq!(
        f.host.take_commands(),
        [
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 0",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 1",
            "/opt/cms/bin/zookeeper-deploy /cust/someapp/cms 2",
        ]
    );
}

#[test]
fn upgrade_and_downgrade() {
    let body = "/app : cms\n  version = '1.0'\n  /deploy\n    /424242424242\n";
    let mut f = fixture(None, &tree("'1'", body));
    f.host.publish("cms", "1.0");
    f.host.publish("cms", "0.9");
    f.host.publish("cms", "1.1");
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("1".into()));
    f.host.take_commands();

    f.set_tree(&tree("'2'", &body.replace("1.0", "1.1")));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("2".into()));
    assert_eq!(
        f.host.take_commands(),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-1.1",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /app 0",
        ]
    );

    f.set_tree(&tree("'3'", &body.replace("1.0", "0.9")));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("3".into()));
    assert_eq!(
        f.host.take_commands(),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-0.9",
            "yum -q list installed cms",
            "yum -y downgrade cms-0.9",
            "yum -q list installed cms",
            "/opt/cms/bin/zookeeper-deploy /app 0",
        ]
    );
}

#[test]
fn failing_install_stops_everyone_and_keeps_the_host_version() {
    let body = "/app : cms\n  version = '1.0'\n  /deploy\n    /424242424242\n";
    let mut f = fixture(None, &tree("'1'", body));
    f.host.publish("cms", "1.0");
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("1".into()));
    f.host.take_commands();

    f.set_tree(&tree("'2'", &body.replace("1.0", "7.7")));
    let Outcome::Failed { version, error } = f.agent.step().unwrap() else {
        panic!("expected a failure");
    };
    assert_eq!(version, "2");
    assert_eq!(
        error,
        "Command failed (exit status: 1): yum -y install cms-7.7\nNo package cms-7.7 available.\n"
    );
    assert_eq!(
        f.host.take_commands(),
        [
            "yum -q list installed cms",
            "yum -y clean all",
            "yum -y install cms-7.7"
        ]
    );
    assert!(f.tree_text().starts_with("/app"));
    assert!(f.tree_text().contains("/hosts\n  version = None\n"));
    assert_eq!(
        f.host_node(),
        "name = 'app.example.com'\nversion = '1'\nerror = 'Command failed (exit status: 1): yum -y install cms-7.7\\nNo package cms-7.7 available.\\n'\n"
    );
    assert_eq!(f.agent.host_version(), Some("1"));
    // All stop: nothing more runs until an operator sets a version.
    assert_eq!(f.agent.step().unwrap(), Outcome::Skipped);

    // A version the package manager says it installed but did not.
    f.host.publish("cms", "8.0");
    fs::write(f.host.root.join("repo/cms-8.0"), "cms 7.9").unwrap();
    f.set_tree(&tree("'3'", &body.replace("1.0", "8.0")));
    let Outcome::Failed { error, .. } = f.agent.step().unwrap() else {
        panic!("expected a failure");
    };
    assert_eq!(error, "Failed to install cms-8.0 (installed: 7.9)");

    // The next good version clears the error.
    f.set_tree(&tree("'4'", body));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("4".into()));
    assert_eq!(f.host_node(), "name = 'app.example.com'\nversion = '4'\n");
}

#[test]
fn failing_deploy_script() {
    let body = "/a : cms\n  version = '1.0'\n  /deploy\n    /424242424242\n      n = 2\n";
    let mut f = fixture(None, &tree("'1'", body));
    f.host.publish("cms", "1.0");
    f.host.break_deploy("/a", 1, true);
    let Outcome::Failed { error, .. } = f.agent.step().unwrap() else {
        panic!("expected a failure");
    };
    assert_eq!(
        error,
        format!(
            "Command failed (exit status: 1): {}/opt/cms/bin/zookeeper-deploy /a 1\ndeploy of /a 1 broke\n",
            f.host.root.display()
        )
    );
    assert_eq!(f.agent.host_version(), None);
    assert_eq!(f.host.files("/etc"), ["cms/a.0.deployed"]);
}

#[test]
fn plan_errors_fail_the_version_without_running_anything() {
    let body = "/a : cms\n  version = '1'\n  /deploy\n    /424242424242\n    /app.example.com\n";
    let mut f = fixture(None, &tree("'1'", body));
    let Outcome::Failed { error, .. } = f.agent.step().unwrap() else {
        panic!("expected a failure");
    };
    assert_eq!(
        error,
        "Conflicting deployments for /a. Can't deploy to app.example.com and 424242424242."
    );
    assert!(f.host.take_commands().is_empty());
}

#[test]
fn checkouts_instead_of_packages() {
    let body = "/a : app\n  version = 'svn+file:///srv/svn/app/trunk'\n  /deploy\n    /web\n";
    let mut f = fixture(Some("web"), &tree("'1'", body));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("1".into()));
    assert_eq!(
        f.host.take_commands(),
        [
            "yum -q list installed app",
            "svn co -q file:///srv/svn/app/trunk /opt/app",
            "stage-build in /opt/app",
            "/opt/app/bin/zookeeper-deploy /a 0",
        ]
    );
    f.set_tree(&tree(
        "'2'",
        &body.replace(
            "svn+file:///srv/svn/app/trunk",
            "git://git.example.com/app.git#v2",
        ),
    ));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("2".into()));
    assert_eq!(
        f.host.take_commands(),
        [
            "git clone -q git://git.example.com/app.git /opt/app",
            "git -C /opt/app checkout -q v2",
            "stage-build in /opt/app",
            "/opt/app/bin/zookeeper-deploy /a 0",
        ]
    );
    // Same checkout at the next version: no new clone.
    f.set_tree(&tree(
        "'3'",
        &body.replace(
            "svn+file:///srv/svn/app/trunk",
            "git://git.example.com/app.git#v2",
        ),
    ));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("3".into()));
    assert_eq!(
        f.host.take_commands(),
        ["/opt/app/bin/zookeeper-deploy /a 0"]
    );
    // Gone: -u, and the checkout is removed as a directory (no yum).
    f.set_tree(&tree("'4'", ""));
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("4".into()));
    assert_eq!(
        f.host.take_commands(),
        ["/opt/app/bin/zookeeper-deploy -u /a 0"]
    );
    assert!(!f.host.root.join("opt/app").exists());
    assert!(f.host.files("/etc").is_empty());
}

#[test]
fn a_second_agent_on_the_same_tree_is_refused() {
    let f = fixture(None, &tree("None", ""));
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        root: dir.path().into(),
        run_dir: dir.path().join("run"),
        me: f.agent.cfg.me.clone(),
        backend: Backend::None,
        runner: Runner::default(),
        after: None,
    };
    let err = Agent::start(cfg, FileStore::new(&f.tree)).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!("another agent is running: /hosts/{ID} is registered")
    );
}

#[test]
fn after_hook_runs_after_a_successful_deploy_only() {
    let body = "/a : cms\n  version = '1.0'\n  /deploy\n    /424242424242\n";
    let mut f = fixture(None, &tree("'1'", body));
    f.host.publish("cms", "1.0");
    f.agent.cfg.after = Some(format!("echo \"after $PWD\" >> '{}'", f.host.log.display()));
    f.agent.cfg.runner.cwd = Some(f.host.root.clone());
    assert_eq!(f.agent.step().unwrap(), Outcome::Deployed("1".into()));
    let cmds = f.host.take_commands();
    assert_eq!(
        cmds.last().unwrap(),
        &format!("after {}", f.host.root.display())
    );
    f.set_tree(&tree("'2'", &body.replace("1.0", "6.6")));
    assert!(matches!(f.agent.step().unwrap(), Outcome::Failed { .. }));
    assert!(!f
        .host
        .take_commands()
        .iter()
        .any(|c| c.starts_with("after")));
}
