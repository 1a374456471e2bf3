//! The real provisioning server for a scenario: a config dir made from the repository's `specs/`,
//! the role trees indexed with `edeploy-server index`, and `edeploy-server serve` as a child
//! process on a loopback port (QEMU's user network reaches it as 10.0.2.2).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Where things are: the server binary, the example config, the built role trees.
pub struct Layout {
    pub server_bin: PathBuf,
    pub specs: PathBuf,
    /// eDeploy's INSTALLDIR: `<version>/<role>/` trees (the tiny role is `1.0/tiny`).
    pub install: PathBuf,
}

/// Copies `specs/` (top-level files) into `work/config`, with an `edeploy.conf` pointing at the
/// scenario's own data directories; `state` replaces the example's state file when given.
pub fn prepare_config(layout: &Layout, work: &Path, state: Option<&str>) -> Result<PathBuf> {
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    for e in std::fs::read_dir(&layout.specs)
        .with_context(|| format!("reading {}", layout.specs.display()))?
    {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), config.join(e.file_name()))?;
        }
    }
    let install = layout
        .install
        .canonicalize()
        .with_context(|| format!("role trees in {}", layout.install.display()))?;
    let conf = config.join("edeploy.conf");
    std::fs::write(
        &conf,
        format!(
            "# Written by the QEMU harness.\n[SERVER]\nCONFIGDIR=.\nHWDIR=../hw\nLOGDIR=../logs\n\
             HEALTHDIR=../health\nLOCKFILE=../edeploy.lock\nUSEPXEMNGR=False\n\
             INSTALLDIR={}\nSTOREDIR=../store\nMETADATADIR=../metadata\n",
            install.display()
        ),
    )?;
    if let Some(s) = state {
        std::fs::write(config.join("state"), s)?;
    }
    for d in ["hw", "logs", "health", "store", "metadata"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    Ok(conf)
}

/// `edeploy-server index --config CONF`: manifests, blobs and packs for every tree.
pub fn index(layout: &Layout, conf: &Path) -> Result<String> {
    let out = Command::new(&layout.server_bin)
        .args(["index", "--config"])
        .arg(conf)
        .output()
        .with_context(|| format!("running {}", layout.server_bin.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("edeploy-server index failed:\n{text}");
    }
    Ok(text)
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(layout: &Layout, conf: &Path, log: &Path) -> Result<Server> {
        let logf = std::fs::File::create(log)?;
        let mut child = Command::new(&layout.server_bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {}", layout.server_bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "edeploy-server did not print its address (got {line:?}); see {}",
                log.display()
            );
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        Ok(Server { child, addr })
    }

    /// `GET path` → `(status, body)`.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("malformed HTTP response to GET {path}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("no status in response to GET {path}"))?;
        Ok((status, body.to_string()))
    }

    /// `GET /nodes` as JSON.
    pub fn nodes(&self) -> Result<serde_json::Value> {
        let (status, body) = self.get("/nodes")?;
        if status != 200 {
            bail!("GET /nodes: HTTP {status}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A direct child, killed and reaped: PID 1 here does not reap orphans.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
