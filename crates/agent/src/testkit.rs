//! Test fixtures shared by this crate's tests and the `edeploy` CLI's: a fake `yum`, fake
//! `svn`/`git` and fake `zookeeper-deploy` scripts that record every call, in order, into one log.
//! Not for production use; public so that the binary's tests drive the same fakes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A `--root` with fakes installed: `bin/` goes first on `PATH`; `repo/<pkg>-<version>` files
/// say which packages the fake yum can install; `yumdb/<pkg>` holds the installed version.
pub struct FakeHost {
    pub root: PathBuf,
    pub bin: PathBuf,
    pub log: PathBuf,
}

fn write_exec(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl FakeHost {
    /// `dir` holds the root (`dir/root`), the fakes (`dir/bin`) and the log (`dir/commands`).
    pub fn new(dir: &Path) -> FakeHost {
        let root = dir.join("root");
        let bin = dir.join("bin");
        let log = dir.join("commands");
        for d in ["opt", "etc", "repo", "yumdb"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(&log, "").unwrap();
        let h = FakeHost { root, bin, log };
        h.write_fakes();
        h
    }

    fn header(&self) -> String {
        format!(
            "#!/bin/sh\nROOT='{}'\nLOG='{}'\n",
            self.root.display(),
            self.log.display()
        )
    }

    fn write_fakes(&self) {
        let deploy = format!(
            "{}echo \"${{0#$ROOT}} $*\" >> \"$LOG\"\n\
             for a in \"$@\"; do case \"$a\" in -*) ;; *) last2=\"$last1\"; last1=\"$a\";; esac; done\n\
             key=$(echo \"$last2 $last1\" | tr / ,)\n\
             if [ -e \"$ROOT/fail-deploy/$key\" ]; then echo \"deploy of $last2 $last1 broke\"; exit 1; fi\n\
             if [ -e \"$ROOT/slow-deploy\" ]; then sleep \"$(cat \"$ROOT/slow-deploy\")\"; fi\n\
             echo \"deployed $last2 $last1\"\n",
            self.header()
        );
        fs::write(self.bin.join("..").join("zookeeper-deploy.sh"), &deploy).ok();
        write_exec(&self.bin.join("fake-zookeeper-deploy"), &deploy);
        // Installing a package puts its deploy script in /opt/<pkg>/bin, as the real rpms do.
        let yum = format!(
            "{h}echo \"yum $*\" >> \"$LOG\"\n\
             db=\"$ROOT/yumdb\"\n\
             case \"$1 $2\" in\n\
             '-q list')\n  [ -e \"$db/$4\" ] || {{ echo 'Error: No matching Packages to list'; exit 1; }}\n  echo 'Installed Packages'\n  echo \"$4.noarch   $(cat \"$db/$4\")   @repo\"; exit 0;;\n\
             '-y clean') echo 'Cleaning repos'; exit 0;;\n\
             '-y remove') rm -f \"$db/$3\"; rm -rf \"$ROOT/opt/$3\"; echo \"Removed $3\"; exit 0;;\n\
             esac\n\
             spec=$3\n\
             [ -e \"$ROOT/repo/$spec\" ] || {{ echo \"No package $spec available.\"; exit 1; }}\n\
             pkg=$(cat \"$ROOT/repo/$spec\" | cut -d' ' -f1); ver=$(cat \"$ROOT/repo/$spec\" | cut -d' ' -f2)\n\
             if [ \"$2\" = install ] && [ -e \"$db/$pkg\" ]; then\n\
               newest=$(printf '%s\\n%s\\n' \"$(cat \"$db/$pkg\")\" \"$ver\" | sort -V | tail -1)\n\
               if [ \"$newest\" != \"$ver\" ]; then echo \"Package $pkg is already installed in a newer version. Nothing to do\"; exit 0; fi\n\
             fi\n\
             echo \"$ver\" > \"$db/$pkg\"\n\
             mkdir -p \"$ROOT/opt/$pkg/bin\"\n\
             cp '{fake}' \"$ROOT/opt/$pkg/bin/zookeeper-deploy\"\n\
             echo \"Installed $pkg-$ver\"\n",
            h = self.header(),
            fake = self.bin.join("fake-zookeeper-deploy").display()
        );
        write_exec(&self.bin.join("yum"), &yum);
        // Checkouts get a deploy script and a stage-build that records itself.
        for (tool, dest_arg) in [("svn", 4), ("git", 4)] {
            let text = format!(
                "{h}echo \"{tool} $*\" | sed \"s|$ROOT||g\" >> \"$LOG\"\n\
                 if [ \"$1\" = -C ]; then exit 0; fi\n\
                 dest=${dest_arg}\n\
                 mkdir -p \"$dest/bin\"\n\
                 cp '{fake}' \"$dest/bin/zookeeper-deploy\"\n\
                 printf '#!/bin/sh\\necho \"stage-build in $(pwd)\" | sed \"s|%s||\" >> \"%s\"\\n' \"$ROOT\" \"$LOG\" > \"$dest/stage-build\"\n\
                 chmod +x \"$dest/stage-build\"\n",
                h = self.header(),
                fake = self.bin.join("fake-zookeeper-deploy").display()
            );
            write_exec(&self.bin.join(tool), &text);
        }
    }

    /// Makes `pkg-version` installable.
    pub fn publish(&self, pkg: &str, version: &str) {
        fs::write(
            self.root.join("repo").join(format!("{pkg}-{version}")),
            format!("{pkg} {version}"),
        )
        .unwrap();
    }

    /// Makes the deploy script fail for (path, n).
    pub fn break_deploy(&self, path: &str, n: u32, broken: bool) {
        let dir = self.root.join("fail-deploy");
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!("{path} {n}").replace('/', ","));
        if broken {
            fs::write(f, "").unwrap();
        } else {
            let _ = fs::remove_file(f);
        }
    }

    /// Makes every deploy script take `secs` seconds (0: back to instant).
    pub fn slow_deploy(&self, secs: u32) {
        let f = self.root.join("slow-deploy");
        if secs == 0 {
            let _ = fs::remove_file(f);
        } else {
            fs::write(f, secs.to_string()).unwrap();
        }
    }

    /// `PATH` for the agent: the fakes first.
    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The commands run since the last call, one per line.
    pub fn take_commands(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap();
        fs::write(&self.log, "").unwrap();
        text.lines().map(String::from).collect()
    }

    /// Sorted relative paths of the files under `root/<sub>`.
    pub fn files(&self, sub: &str) -> Vec<String> {
        let base = self.root.join(sub.trim_start_matches('/'));
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(&base).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }
}

/// A real ZooKeeper server for tests: `java` with Debian's `zookeeper.jar`, a `zoo.cfg` and data
/// directory under the given directory, on a free loopback port. A direct child of the test,
/// killed and waited for on drop (nothing here reaps orphans).
pub struct ZkServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

/// Where Debian's `zookeeper` package puts the server.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

impl ZkServer {
    /// Panics with what to install when ZooKeeper is missing: these tests must not pass by
    /// skipping.
    pub fn start(dir: &Path) -> ZkServer {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "ZooKeeper is not installed ({ZOOKEEPER_JAR} missing): apt-get install zookeeper \
             (listed in .ci/packages)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let data = dir.join("zkdata");
        fs::create_dir_all(&data).unwrap();
        fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 minSessionTimeout=1000\nmaxSessionTimeout=60000\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,stat\n",
                data.display()
            ),
        )
        .unwrap();
        let mut s = ZkServer {
            port,
            dir: dir.into(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.dir.join("zookeeper.log")).unwrap();
        let child = std::process::Command::new("java")
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                &format!("{ZOOKEEPER_JAR}:/etc/zookeeper/conf"),
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java (a JRE) must be installed to run ZooKeeper");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.ruok() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "ZooKeeper exited ({status}):\n{}",
                    fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ZooKeeper did not answer on {} within 60 s",
                self.addr()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn ruok(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(self.addr()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut out = String::new();
        s.write_all(b"ruok").is_ok() && s.read_to_string(&mut out).is_ok() && out == "imok"
    }

    /// Kills the server and waits for it; its data directory stays (sessions survive a restart
    /// that is shorter than their timeout).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts with an empty data directory: every session (and node) is gone, so clients
    /// find their sessions expired.
    pub fn restart_empty(&mut self) {
        self.stop();
        let data = self.dir.join("zkdata");
        fs::remove_dir_all(&data).unwrap();
        fs::create_dir_all(&data).unwrap();
        self.spawn();
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}
