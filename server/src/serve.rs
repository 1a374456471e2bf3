//! `edeploy-server serve`: options, the no-flag demo setup, and the tokio runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use edeploy_server::pipeline::{Server, DEFAULT_MAX_UPLOAD};

#[derive(clap::Args)]
#[command(after_help = "Routes:\n  \
    POST /upload, /cgi-bin/upload.py          multipart section, file[, failure]: configure script\n  \
    POST /upload-health, /cgi-bin/upload-health.py   health check: file[, session]\n  \
    GET  /metrics                             Prometheus text\n  \
    GET  /nodes                               JSON time line per machine\n  \
    POST /report                              urlencoded sysname, event[, detail]: boot report\n  \
    GET  /trees/PATH                          STOREDIR files (manifests/V/R.manifest[.sig], \
    packs/H.pack with Range, packs/H.idx, blobs/ab/H, sigs/ab/H, upgrades/FROM/ROLE, images/ROLE-VERSION.edeploy)\n  \
    GET  /metadata/FROM/ROLE/TO/NAME          METADATADIR files (exclude, add_only, pre, post)\n\n\
    Status: 200 script, 400 bad upload, 404 no profile matched, 409 quota or CMDB exhausted, \
    413 too large, 500 internal; errors carry X-Edeploy-Error and a sh body that exits 1.\n\n\
    CGI: with GATEWAY_INTERFACE set, the binary handles one request (config from EDEPLOY_CONF, \
    default /etc/edeploy.conf). See docs/server.md.")]
pub struct ServeArgs {
    /// edeploy.conf to serve (sections chosen by the uploads' `section` field). Without it, the
    /// repository's specs/ is copied to --data-dir on first start and served from there.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0: any free port; the bound address is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the no-config demo keeps its copy of specs/ and the files it writes.
    #[arg(long, value_name = "DIR", default_value = "var/edeploy")]
    data_dir: PathBuf,
    /// Largest accepted request body, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_UPLOAD)]
    max_upload: usize,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The repository's example config: beside the workspace this binary was built from, or under the
/// current directory.
fn find_specs() -> Option<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    [built, PathBuf::from("specs")]
        .into_iter()
        .find(|p| p.join("edeploy.conf").is_file())
}

/// Copies specs/ (top-level files only) into `data` unless it already holds a config, so the
/// repository's tracked files are never written by the demo server.
fn demo_config(data: &Path) -> Result<PathBuf> {
    let conf = data.join("edeploy.conf");
    if conf.is_file() {
        eprintln!("edeploy-server: serving the config in {}", data.display());
        return Ok(conf);
    }
    let Some(specs) = find_specs() else {
        bail!("no --config given and no specs/ directory found to copy from");
    };
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    for e in std::fs::read_dir(&specs)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), data.join(e.file_name()))
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    let show = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    eprintln!(
        "edeploy-server: first start without --config: copied {} to {} (edit it there)",
        show(&specs).display(),
        show(data).display()
    );
    Ok(conf)
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let conf = match a.config {
        Some(c) => c,
        None => demo_config(&a.data_dir)?,
    };
    // Fail at start, not on the first upload, when the config is unreadable.
    edeploy_spec::conf::ServerConf::load(&conf, edeploy_spec::conf::DEFAULT_SECTION)
        .with_context(|| format!("reading {}", conf.display()))?;
    let mut server = Server::new(conf.clone());
    server.max_upload = a.max_upload;
    // A long-running server replaces files all day: it reuses the replaced files' inodes (see
    // edeploy_fsutil::Spares). Before `recover`, which then adopts a previous run's temp files.
    edeploy_fsutil::recycle_replaced_files();
    server
        .recover(edeploy_spec::conf::DEFAULT_SECTION)
        .map_err(|e| anyhow::anyhow!("recovering {}: {e}", conf.display()))?;
    let server = Arc::new(server);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = a.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        let listener = listen(a.listen).with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to find the port when --listen ends in :0.
        println!(
            "edeploy-server: listening on http://{addr} (config {})",
            conf.display()
        );
        tracing::info!(%addr, config = %conf.display(), "serving");
        edeploy_server::http::serve(server, listener).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A listener with a deep accept queue: a rack powering on at once connects in a burst, and a
/// full queue makes the kernel reset connections (tokio's default backlog is 1024, std's 128).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}
