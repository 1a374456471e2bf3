//! The HSERV path: the install step fetches `http://HSERV:HSERV_PORT/HPATH/<role>-<version>.edeploy`
//! from a loopback HTTP server (which drops the first connection mid-body, so the `Range`
//! resume is exercised too) and installs it into the chroot, recorded like a pack install.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use edeploy_initrd::cmdline::Params;
use edeploy_initrd::configure::Configured;
use edeploy_initrd::install;
use edeploy_tree::image;

/// Serves `body` at `path` (HTTP/1.1, `Range: bytes=N-` honoured, one request per
/// connection); the first response is cut after `cut` bytes. Records the requests.
fn serve(path: &str, body: Vec<u8>, cut: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let path = path.to_string();
    let n = AtomicUsize::new(0);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut from = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    from = v.trim_end_matches('-').parse().unwrap();
                }
            }
            let req = line.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(format!("{req} from {from}"));
            if req != path {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let status = if from > 0 {
                format!(
                    "206 Partial Content\r\nContent-Range: bytes {from}-{}/{}",
                    body.len() - 1,
                    body.len()
                )
            } else {
                "200 OK".to_string()
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - from
            );
            let end = if n.fetch_add(1, Ordering::SeqCst) == 0 {
                (from + cut).min(body.len())
            } else {
                body.len()
            };
            let _ = s.write_all(&body[from..end]);
        }
    });
    (port, seen)
}

fn tree(dir: &Path) -> std::path::PathBuf {
    let t = dir.join("tree");
    std::fs::create_dir_all(t.join("etc")).unwrap();
    std::fs::create_dir_all(t.join("usr/lib")).unwrap();
    std::fs::write(t.join("etc/motd"), "Role base\n").unwrap();
    let mut x = 1u64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(t.join("usr/lib/big.so"), big).unwrap();
    std::os::unix::fs::symlink("big.so", t.join("usr/lib/big.so.1")).unwrap();
    t
}

fn cfg() -> Configured {
    Configured {
        role: "base".into(),
        version: "1.0".into(),
        disk: "vda".into(),
        vars: Default::default(),
        grub_options: String::new(),
        os: None,
        os_ver: None,
    }
}

#[test]
fn hserv_image_over_http_with_resume() {
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path());
    let mut img = Vec::new();
    image::build_image(&t, "1.0", "base", None, &Default::default(), &mut img).unwrap();
    assert!(img.len() > 2_000_000);
    let (port, seen) = serve("/trees/images/base-1.0.edeploy", img, 1_000_000);
    let params = Params {
        hserv: Some("127.0.0.1".into()),
        hserv_port: port,
        hpath: "/trees/images/".into(),
        ..Params::default()
    };
    // What step_install builds from SERV: unused when HSERV is set (never connected to).
    let src = install::http_source(&params).unwrap();
    let chroot = d.path().join("chroot");
    let lines = Mutex::new(Vec::new());
    let log = |s: &str| lines.lock().unwrap().push(s.to_string());
    let m = install::install(src.as_ref(), &cfg(), &params, &chroot, &log).unwrap();
    assert_eq!(m.entries.len(), 6);
    assert_eq!(
        std::fs::read(chroot.join("usr/lib/big.so")).unwrap(),
        std::fs::read(t.join("usr/lib/big.so")).unwrap()
    );
    let conf = std::fs::read_to_string(chroot.join("var/lib/edeploy/conf")).unwrap();
    assert!(
        conf.contains("VERS=1.0") && conf.contains("ROLE=base"),
        "{conf}"
    );
    assert!(chroot.join("var/lib/edeploy/manifest").is_file());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "/trees/images/base-1.0.edeploy from 0");
    assert!(
        seen[1].starts_with("/trees/images/base-1.0.edeploy from "),
        "{seen:?}"
    );
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "from image http://127.0.0.1:{port}/trees/images/base-1.0.edeploy"
        ))),
        "{lines:?}"
    );

    // Another role: 404, a clear error naming the URL.
    let other = Configured {
        role: "web".into(),
        ..cfg()
    };
    let e =
        install::install(src.as_ref(), &other, &params, &d.path().join("c2"), &|_| {}).unwrap_err();
    assert!(
        e.contains("web-1.0.edeploy") && e.contains("not found"),
        "{e}"
    );
}
