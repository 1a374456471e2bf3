//! Tree routes and boot reports against the real `edeploy-server` (index, serve, CGI): the store
//! `index` publishes, served over HTTP with Range support, read back by the real `HttpSource`
//! (including through a proxy that drops the connection mid-pack), hostile paths refused.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{bin, serve, Resp};
use edeploy_tree::http::HttpSource;
use edeploy_tree::source::Source;

/// A config directory layout: `DIR/edeploy.conf`, `DIR/config`, trees in `DIR/install`,
/// metadata in `DIR/metadata`, the store in `DIR/store` (all by the conf's defaults).
fn setup(dir: &Path) -> PathBuf {
    let conf = common::tree_conf(dir);
    let v1 = dir.join("install/1/base");
    fs::create_dir_all(v1.join("etc")).unwrap();
    fs::create_dir_all(v1.join("usr/bin")).unwrap();
    fs::write(v1.join("etc/motd"), "version 1\n").unwrap();
    fs::write(v1.join("etc/empty"), "").unwrap();
    // Incompressible-ish and > 1 MiB, so the pack is large enough to cut in the middle.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..1_500_000)
        .map(|_| {
            // xorshift64: zstd cannot shrink it, so the pack really is > 1 MiB.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(v1.join("usr/bin/big"), &big).unwrap();
    fs::set_permissions(v1.join("usr/bin/big"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(v1.join("usr/bin/big"), v1.join("usr/bin/big2")).unwrap();
    std::os::unix::fs::symlink("big", v1.join("usr/bin/link")).unwrap();
    let v2 = dir.join("install/2/base");
    fs::create_dir_all(v2.join("etc")).unwrap();
    fs::write(v2.join("etc/motd"), "version 2\n").unwrap();
    let md = dir.join("metadata/1/base/2");
    fs::create_dir_all(&md).unwrap();
    fs::write(md.join("exclude"), "/etc/fstab\n").unwrap();
    conf
}

fn index(conf: &Path, extra: &[&str]) -> String {
    let o = Command::new(bin())
        .args(["index", "--config"])
        .arg(conf)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// One raw HTTP exchange with extra header lines (the path is sent as given, unnormalised).
fn raw(addr: SocketAddr, method: &str, path: &str, headers: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // HTTP/1.1 (lighttpd honours Range only there), one request per connection.
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).unwrap();
    let split = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&b[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    Resp {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
        body: b[split + 4..].to_vec(),
    }
}

fn pack_path(store: &Path) -> PathBuf {
    let mut packs: Vec<PathBuf> = fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    packs.pop().unwrap() // the largest: version 1's
}

/// The route and bytes of the largest blob in the store (the 1.5 MB raw file of `setup`).
fn largest_blob(store: &Path) -> (String, Vec<u8>) {
    let mut blobs: Vec<PathBuf> = fs::read_dir(store.join("blobs"))
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let p = blobs.pop().unwrap();
    let name = p.file_name().unwrap().to_str().unwrap().to_string();
    (
        format!("/trees/blobs/{}/{name}", &name[..2]),
        fs::read(&p).unwrap(),
    )
}

/// Two ranges of the largest blob in one raw request: a 206 `multipart/byteranges` whose parts
/// are those bytes (what both edeploy-server and lighttpd answer).
fn check_multipart(addr: SocketAddr, store: &Path) {
    let (url, blob) = largest_blob(store);
    let r = raw(addr, "GET", &url, "Range: bytes=0-9,100-109\r\n");
    assert_eq!(r.status, 206);
    let ctype = r.header("content-type").unwrap_or_default().to_string();
    let boundary = edeploy_tree::byteranges::boundary(&ctype).expect(&ctype);
    let parts = edeploy_tree::byteranges::parse(boundary, &r.body).unwrap();
    assert_eq!(
        parts,
        vec![(0, blob[..10].to_vec()), (100, blob[100..110].to_vec())]
    );
}

/// `blob_ranges` (one multi-range request) gives exactly the stored bytes of each range.
fn check_blob_ranges(src: &HttpSource, store: &Path) {
    let (url, blob) = largest_blob(store);
    let hash = edeploy_tree::manifest::unhex32(url.rsplit('/').next().unwrap()).unwrap();
    let n = blob.len() as u64;
    let ranges = [(1, 100), (5000, 5001), (200_000, 300_000), (n - 10, n)];
    let got = src.blob_ranges(&hash, &ranges).unwrap();
    assert_eq!(got.len(), ranges.len());
    for ((s, e), g) in ranges.iter().zip(&got) {
        assert!(g[..] == blob[*s as usize..*e as usize], "range {s}..{e}");
    }
}

#[test]
fn index_then_serve_trees() {
    let t = tempfile::tempdir().unwrap();
    let conf = setup(t.path());
    let out = index(&conf, &[]);
    assert!(out.contains("1/base: 8 entries"), "{out}");
    assert!(out.contains("2/base: 2 entries"), "{out}");
    assert!(out.contains("upgrades: 1 list"), "{out}");
    let store = t.path().join("store");
    assert_eq!(
        fs::read_to_string(store.join("upgrades/1/base")).unwrap(),
        "2\n"
    );

    let (_srv, addr) = serve(&["--config", conf.to_str().unwrap()], t.path());

    // Manifest, byte for byte; HEAD gives the length and no body.
    let m = raw(addr, "GET", "/trees/manifests/1/base.manifest", "");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.body,
        fs::read(store.join("manifests/1/base.manifest")).unwrap()
    );
    let pack = pack_path(&store);
    let pack_bytes = fs::read(&pack).unwrap();
    let pack_url = format!(
        "/trees/packs/{}",
        pack.file_name().unwrap().to_str().unwrap()
    );
    let h = raw(addr, "HEAD", &pack_url, "");
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-length"),
        Some(&*pack_bytes.len().to_string())
    );
    assert_eq!(h.header("accept-ranges"), Some("bytes"));
    assert!(h.body.is_empty());

    // Range: exactly the tail, with Content-Range; a closed range; past the end is 416.
    let n = 123_457;
    let r = raw(addr, "GET", &pack_url, &format!("Range: bytes={n}-\r\n"));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, pack_bytes[n..]);
    assert_eq!(
        r.header("content-range"),
        Some(&*format!(
            "bytes {n}-{}/{}",
            pack_bytes.len() - 1,
            pack_bytes.len()
        ))
    );
    let r = raw(addr, "GET", &pack_url, "Range: bytes=8-15\r\n");
    assert_eq!((r.status, &r.body[..]), (206, &pack_bytes[8..16]));
    let r = raw(
        addr,
        "GET",
        &pack_url,
        &format!("Range: bytes={}-\r\n", pack_bytes.len()),
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(&*format!("bytes */{}", pack_bytes.len()))
    );

    // Several ranges in one request: multipart/byteranges, read back by HttpSource.
    check_multipart(addr, &store);
    check_blob_ranges(&HttpSource::new(&format!("http://{addr}")).unwrap(), &store);

    // Upgrade list and metadata.
    let r = raw(addr, "GET", "/trees/upgrades/1/base", "");
    assert_eq!((r.status, r.text().as_str()), (200, "2\n"));
    let r = raw(addr, "GET", "/metadata/1/base/2/exclude", "");
    assert_eq!((r.status, r.text().as_str()), (200, "/etc/fstab\n"));
    assert_eq!(raw(addr, "GET", "/metadata/1/base/2/pre", "").status, 404);

    // Hostile paths: 400, never a file from outside the store; missing ones 404.
    fs::write(t.path().join("secret"), "s").unwrap();
    for p in [
        "/trees/../secret",
        "/trees/manifests/../../secret",
        "/trees/%2e%2e/secret",
        "/trees/%252e%252e/secret",
        "/trees//etc/passwd",
        "/trees/a%00b",
        "/trees/..%5csecret",
        "/metadata/../../secret/x",
        "/metadata/1/base/2",
    ] {
        let r = raw(addr, "GET", p, "");
        assert_eq!(r.status, 400, "{p}: {}", r.text());
        assert_ne!(r.text(), "s", "{p} served a file outside the store");
    }
    for p in [
        "/trees/manifests/9/base.manifest",
        "/trees/packs",
        "/trees/nothing",
    ] {
        assert_eq!(raw(addr, "GET", p, "").status, 404, "{p}");
    }

    // The real HttpSource over the real server: fresh install, equal to the source tree.
    let src = HttpSource::new(&format!("http://{addr}")).unwrap();
    assert_eq!(src.upgrades("1", "base").unwrap(), vec!["2"]);
    assert_eq!(src.upgrades("7", "base").unwrap(), Vec::<String>::new());
    assert_eq!(
        src.metadata("1", "base", "2", "exclude")
            .unwrap()
            .as_deref(),
        Some(&b"/etc/fstab\n"[..])
    );
    assert!(matches!(
        src.manifest("9", "base"),
        Err(edeploy_tree::Error::NotFound(_))
    ));
    let root = t.path().join("root");
    edeploy_tree::install::install(&src, "1", "base", &root, &Default::default()).unwrap();
    let src_tree = t.path().join("install/1/base");
    assert_eq!(
        fs::read(root.join("usr/bin/big")).unwrap(),
        fs::read(src_tree.join("usr/bin/big")).unwrap()
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/link")).unwrap(),
        Path::new("big")
    );

    // Signed index: the .sig is served.
    let key = t.path().join("key");
    fs::write(
        &key,
        edeploy_tree::manifest::hex(
            &edeploy_tree::manifest::generate_signing_key()
                .unwrap()
                .to_bytes(),
        ),
    )
    .unwrap();
    let out = index(&conf, &["--key", key.to_str().unwrap(), "2", "base"]);
    assert!(
        out.contains("2/base: 2 entries") && out.contains("signed"),
        "{out}"
    );
    assert!(!out.contains("1/base"), "{out}");
    assert_eq!(
        src.manifest_signature("2", "base")
            .unwrap()
            .map(|s| s.len()),
        Some(64)
    );
    assert_eq!(src.manifest_signature("1", "base").unwrap(), None);

    // Metadata removed: the next index drops the stale upgrade list.
    fs::remove_dir_all(t.path().join("metadata/1")).unwrap();
    let out = index(&conf, &["2", "base"]);
    assert!(out.contains("upgrades: 0 list"), "{out}");
    assert!(!store.join("upgrades/1").exists());
    assert_eq!(src.upgrades("1", "base").unwrap(), Vec::<String>::new());
}

/// A TCP proxy that cuts the first connection carrying a pack after `cut` bytes of response,
/// like a network that drops mid-download; later connections pass whole.
fn flaky_proxy(upstream: SocketAddr, cut: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let packs = Arc::new(AtomicUsize::new(0));
    let packs2 = packs.clone();
    std::thread::spawn(move || {
        let mut cut_done = false;
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut up = TcpStream::connect(upstream).unwrap();
            // Read the request head to see what it is for.
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if c.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            // One request per connection (the proxy forwards only this head): ask the server
            // to close after answering, so the client does not reuse the connection.
            head.truncate(head.len().saturating_sub(2));
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            up.write_all(&head).unwrap();
            let is_pack = String::from_utf8_lossy(&head).contains(".pack ");
            if is_pack {
                packs2.fetch_add(1, Ordering::SeqCst);
            }
            let limit = if is_pack && !cut_done {
                cut_done = true;
                cut
            } else {
                usize::MAX
            };
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut buf = [0u8; 8192];
                while sent < limit {
                    let n = match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - sent),
                    };
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = c.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, packs)
}

#[test]
fn install_resumes_after_a_dropped_connection() {
    let t = tempfile::tempdir().unwrap();
    let conf = setup(t.path());
    index(&conf, &["1", "base"]);
    let (_srv, addr) = serve(&["--config", conf.to_str().unwrap()], t.path());
    let pack_len = fs::metadata(pack_path(&t.path().join("store")))
        .unwrap()
        .len();
    assert!(
        pack_len > 1_000_000,
        "pack of {pack_len} bytes is too small to cut"
    );
    let (proxy, packs) = flaky_proxy(addr, 600_000);
    let src = HttpSource::new(&format!("http://{proxy}")).unwrap();
    let root = t.path().join("root");
    edeploy_tree::install::install(&src, "1", "base", &root, &Default::default()).unwrap();
    assert_eq!(
        fs::read(root.join("usr/bin/big")).unwrap(),
        fs::read(t.path().join("install/1/base/usr/bin/big")).unwrap()
    );
    assert_eq!(
        packs.load(Ordering::SeqCst),
        2,
        "one cut pack request, one resume"
    );
}

#[test]
fn boot_reports() {
    let t = tempfile::tempdir().unwrap();
    let conf = setup(t.path());
    let (_srv, addr) = serve(&["--config", conf.to_str().unwrap()], t.path());
    let form = "application/x-www-form-urlencoded";
    let r = common::request(
        addr,
        "POST",
        "/report",
        form,
        b"sysname=vm-52-54-00-00-00-01&event=booted&detail=kernel+6.1",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    for body in [
        &b"sysname=../x&event=booted"[..],
        b"event=booted",
        b"sysname=a&event=no+spaces",
    ] {
        let r = common::request(addr, "POST", "/report", form, body).unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.text().lines().count(), 1, "{}", r.text());
    }
    let nodes = common::request(addr, "GET", "/nodes", "", b"").unwrap();
    let j: serde_json::Value = serde_json::from_slice(&nodes.body).unwrap();
    let ev = &j["vm-52-54-00-00-00-01"][0];
    assert_eq!(ev["event"], "report");
    assert_eq!(ev["detail"], "booted: kernel 6.1");
    let m = common::request(addr, "GET", "/metrics", "", b"")
        .unwrap()
        .text();
    assert!(
        m.contains("edeploy_reports_total{event=\"booted\"} 1"),
        "{m}"
    );

    // The same route under CGI (the binary copied as cgi-bin/report.py).
    let body = b"sysname=vm1&event=booted";
    let mut c = Command::new(bin())
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("EDEPLOY_CONF", &conf)
        .env("REQUEST_METHOD", "POST")
        .env("SCRIPT_NAME", "/cgi-bin/report.py")
        .env("CONTENT_TYPE", form)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("Status: 200"), "{out}");
    assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
}

/// The CGI deployment: lighttpd serves STOREDIR under `/trees/` and METADATADIR under
/// `/metadata/` as static files, and the binary as `cgi-bin/report.py`. The real `HttpSource`
/// installs and lists upgrades from it exactly as from `serve`.
#[test]
fn static_lighttpd_serves_the_store() {
    let Some(lighttpd) = ["/usr/sbin/lighttpd", "/usr/bin/lighttpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        panic!("lighttpd is not installed (apt-get install lighttpd; .ci/packages lists it)");
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let conf = setup(dir);
    index(&conf, &[]);
    let cgi = dir.join("cgi-bin");
    fs::create_dir_all(&cgi).unwrap();
    fs::copy(bin(), cgi.join("report.py")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lconf = dir.join("lighttpd.conf");
    fs::write(
        &lconf,
        format!(
            "server.document-root = \"{d}/config\"\n\
             server.bind = \"127.0.0.1\"\n\
             server.port = {port}\n\
             server.errorlog = \"{d}/lighttpd-error.log\"\n\
             server.modules = (\"mod_alias\", \"mod_setenv\", \"mod_cgi\")\n\
             alias.url = (\"/trees/\" => \"{d}/store/\", \"/metadata/\" => \"{d}/metadata/\", \
                          \"/cgi-bin/\" => \"{d}/cgi-bin/\")\n\
             setenv.add-environment = (\"EDEPLOY_CONF\" => \"{c}\")\n\
             $HTTP[\"url\"] =~ \"^/cgi-bin/\" {{ cgi.assign = (\"\" => \"\") }}\n",
            d = dir.display(),
            c = conf.display(),
        ),
    )
    .unwrap();
    let _l = common::Proc(
        Command::new(lighttpd)
            .args(["-D", "-f"])
            .arg(&lconf)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_port(addr);

    let src = HttpSource::new(&format!("http://{addr}")).unwrap();
    assert_eq!(src.upgrades("1", "base").unwrap(), vec!["2"]);
    assert_eq!(
        src.metadata("1", "base", "2", "exclude")
            .unwrap()
            .as_deref(),
        Some(&b"/etc/fstab\n"[..])
    );
    let root = dir.join("root");
    edeploy_tree::install::install(&src, "1", "base", &root, &Default::default()).unwrap();
    assert_eq!(
        fs::read(root.join("usr/bin/big")).unwrap(),
        fs::read(dir.join("install/1/base/usr/bin/big")).unwrap()
    );
    // A delta's ranges from a plain static server: one multi-range request.
    check_blob_ranges(&src, &dir.join("store"));
    check_multipart(addr, &dir.join("store"));
    // A resumed pack read from lighttpd: Range from the middle.
    let pack = pack_path(&dir.join("store"));
    let url = format!(
        "/trees/packs/{}",
        pack.file_name().unwrap().to_str().unwrap()
    );
    let r = raw(addr, "GET", &url, "Range: bytes=1000-\r\n");
    assert_eq!(
        (r.status, r.body.len() as u64),
        (206, fs::metadata(&pack).unwrap().len() - 1000)
    );

    let r = common::request(
        addr,
        "POST",
        "/cgi-bin/report.py",
        "application/x-www-form-urlencoded",
        b"sysname=vm1&event=booted",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
}
