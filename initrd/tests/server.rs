//! The initrd's upload, configure and log code against the real server pipeline
//! (`edeploy_server::Server` on its scenario config), behind a minimal HTTP/1.1 front end run
//! in-process, so the real prologue and the real status codes are exercised.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edeploy_initrd::cmdline::Params;
use edeploy_initrd::configure;
use edeploy_initrd::upload::{self, Retry, UploadError};
use edeploy_server::{fixture, Request, Server};

/// Serves `server` on a free loopback port; returns `http://127.0.0.1:PORT`.
fn serve(server: Server) -> (String, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = Arc::new(server);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let server = server.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut it = line.split_whitespace();
                let method = it.next().unwrap_or("").to_string();
                let path = it.next().unwrap_or("").to_string();
                let (mut len, mut ctype, mut chunked) = (0usize, String::new(), false);
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap(),
                        "content-type" => ctype = v.trim().to_string(),
                        "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                        _ => {}
                    }
                }
                let mut body = Vec::new();
                if chunked {
                    loop {
                        let mut n = String::new();
                        r.read_line(&mut n).unwrap();
                        let n = usize::from_str_radix(n.trim(), 16).unwrap();
                        let mut c = vec![0; n + 2];
                        r.read_exact(&mut c).unwrap();
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&c[..n]);
                    }
                } else {
                    body.resize(len, 0);
                    r.read_exact(&mut body).unwrap();
                }
                let resp = server.handle(
                    Request {
                        method: &method,
                        path: &path,
                        content_type: &ctype,
                        body: &body,
                    },
                    false,
                );
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    resp.status,
                    resp.content_type,
                    resp.body.len()
                );
                if let Some(reason) = &resp.reason {
                    out.push_str(&format!("X-Edeploy-Error: {reason}\r\n"));
                }
                out.push_str("\r\n");
                s.write_all(out.as_bytes()).unwrap();
                s.write_all(&resp.body).unwrap();
            });
        }
    });
    ("127.0.0.1".into(), port)
}

fn params(serv: &str, port: u16) -> Params {
    Params::parse(&format!("SERV={serv} HTTP_PORT={port}")).unwrap()
}

fn retry() -> Retry {
    Retry {
        total: Duration::from_secs(5),
        ..Retry::default()
    }
}

#[test]
fn upload_configure_report_and_log() {
    let d = tempfile::tempdir().unwrap();
    let conf = fixture::scenario_config(d.path()).unwrap();
    let (host, port) = serve(Server::new(&conf));
    let p = params(&host, port);
    let url = p.upload_url();
    assert!(url.ends_with("/cgi-bin/upload.py"));
    let log = |_: &str| {};

    // A match: the real configure script, run for real.
    let hw = fixture::hw_json("vm", "52:54:00:00:00:01");
    let script = upload::upload_hw(&url, &p.section, &hw, retry(), &log).unwrap();
    assert_eq!(configure::profile(&script).as_deref(), Some("vm"));
    let root = d.path().join("initrd-root");
    std::fs::create_dir_all(&root).unwrap();
    let lines = std::cell::RefCell::new(Vec::new());
    let keep = |l: &str| lines.borrow_mut().push(l.to_string());
    configure::run(&root, root.to_str().unwrap(), &script, &p, &keep).unwrap();
    let c = configure::read_back(&root, &p).unwrap();
    assert_eq!((c.role.as_str(), c.version.as_str()), ("base", "1.0"));
    assert_eq!(c.disk_path(), "/dev/sda");
    assert_eq!(c.var("hostname").as_deref(), Some("vm1"));
    assert_eq!(
        c.var("METADATA_URL").as_deref(),
        Some("http://meta.example/metadata/")
    );

    // No profile for this machine: the server's reason, no retry.
    let t = std::time::Instant::now();
    let e = upload::upload_hw(
        &url,
        &p.section,
        &fixture::hw_json("nothing", "52:54:00:00:00:09"),
        retry(),
        &log,
    )
    .unwrap_err();
    match &e {
        UploadError::Refused { status, reason } => {
            assert_eq!(*status, 404, "{e}");
            assert!(!reason.is_empty() && !reason.contains('\n'));
        }
        e => panic!("{e}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));

    // Unknown section: 400 with the header's reason.
    let e = upload::upload_hw(&url, "NOPE", &hw, retry(), &log).unwrap_err();
    assert!(
        e.to_string().contains("400") && e.to_string().contains("NOPE"),
        "{e}"
    );

    // Failure report and log upload.
    upload::report_failure(&url, &p.section, "vm", &hw, retry(), &log).unwrap();
    upload::upload_log(
        &url,
        &p.section,
        "vm-52-54-00-00-00-01",
        b"install log\n",
        retry(),
        &log,
    )
    .unwrap();
    let saved = std::fs::read(d.path().join("logs/vm-52-54-00-00-00-01.log.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&saved[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "install log\n");
    assert!(Path::new(&d.path().join("hw")).is_dir());
}

#[test]
fn set_role_missing_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let script = edeploy_server::script::render("p", &[], &[], "echo no role here\n");
    let p = Params::default();
    configure::run(d.path(), d.path().to_str().unwrap(), &script, &p, &|_| {}).unwrap();
    let e = configure::read_back(d.path(), &p).unwrap_err();
    assert_eq!(e.to_string(), "configure script did not call set_role");
    // A failing command stops the script (set -e) and is reported.
    let script = edeploy_server::script::render("p", &[], &[], "false\nset_role a 1 sda\n");
    let e = configure::run(d.path(), d.path().to_str().unwrap(), &script, &p, &|_| {}).unwrap_err();
    assert!(e.to_string().starts_with("configure script failed"), "{e}");
}

#[test]
fn grub_options_and_post_rsync_from_the_real_prologue() {
    let d = tempfile::tempdir().unwrap();
    let script = edeploy_server::script::render(
        "p",
        &[],
        &[],
        "set_role base 2.0 vda\ngrub_options console=ttyS0\ngrub_options quiet\n\
         echo 'auto lo' | config /etc/network/interfaces 644\n",
    );
    let p = Params::parse("OS=Debian").unwrap();
    configure::run(d.path(), d.path().to_str().unwrap(), &script, &p, &|_| {}).unwrap();
    let c = configure::read_back(d.path(), &p).unwrap();
    assert_eq!(c.grub_options, "console=ttyS0 quiet");
    assert_eq!(c.os.as_deref(), Some("Debian"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("post_rsync/etc/network/interfaces")).unwrap(),
        "auto lo\n"
    );
}
