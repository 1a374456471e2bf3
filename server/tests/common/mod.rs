//! Shared by the integration tests: a minimal HTTP/1.0 client, the server process guard, and the
//! upload scenarios every front end (embedded, CGI under lighttpd) must pass identically.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edeploy_server::fixture;
use edeploy_server::multipart::encode;

pub const BOUNDARY: &str = "----edeploy-test-boundary";
pub const MAX_UPLOAD: usize = 65_536;

/// A child process killed and reaped when dropped (PID 1 here reaps nothing).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edeploy-server"))
}

/// Starts `edeploy-server serve --listen 127.0.0.1:0 ARGS` and returns it with its address, read
/// from the line it prints on stdout.
pub fn serve(args: &[&str], cwd: &Path) -> (Proc, SocketAddr) {
    serve_env(args, cwd, &[])
}

/// [`serve`] with extra environment variables.
pub fn serve_env(args: &[&str], cwd: &Path, env: &[(&str, String)]) -> (Proc, SocketAddr) {
    let child = Command::new(bin())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env("EDEPLOY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edeploy-server");
    let mut p = Proc(child);
    let out = p.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("edeploy-server did not say where it listens within 30 s");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (p, addr)
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 exchange (the server closes the connection, so the body ends at EOF).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        req.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // A server may answer 413 and close before reading everything: that is not an error here.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {raw:?}")))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

pub fn post(addr: SocketAddr, path: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Resp {
    let body = encode(BOUNDARY, fields);
    request(
        addr,
        "POST",
        path,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &body,
    )
    .expect("request")
}

pub fn upload_hw(addr: SocketAddr, path: &str, product: &str, mac: &str) -> Resp {
    let hw = fixture::hw_json(product, mac);
    post(addr, path, &[("file", Some("hw.json"), hw.as_bytes())])
}

/// Waits until something accepts connections on `addr`.
pub fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} after 10 s");
}

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn hostname(r: &Resp) -> String {
    let t = r.text();
    t.split("\nhostname='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("no hostname in {t}"))
        .to_string()
}

fn used(cmdb: &Path) -> usize {
    edeploy_spec::cmdb::Cmdb::load(cmdb)
        .unwrap()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.get("used").is_some())
        .count()
}

fn assert_refused(r: &Resp, status: u16, reason_has: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let reason = r.header("x-edeploy-error").unwrap_or_default();
    assert!(
        reason.contains(reason_has),
        "reason {reason:?} lacks {reason_has:?}"
    );
    assert!(r.text().starts_with("#!/bin/sh\n"), "{}", r.text());
    assert!(r.text().ends_with("exit 1\n"), "{}", r.text());
}

/// Every upload scenario against a front end serving [`fixture::scenario_config`] in `dir` with
/// a size cap of [`MAX_UPLOAD`]; `upload` and `health` are the front end's paths.
pub fn scenarios(addr: SocketAddr, dir: &Path, upload: &str, health: &str) {
    let main = dir.join("main");
    let state = main.join("state");
    let state0 = read(&state);
    let hw_of =
        |product: &str, mac: &str| dir.join(format!("hw/{}.hw", fixture::sysname(product, mac)));

    // Match: the CMDB is expanded (original kept), one entry used, '*' state untouched.
    let r = upload_hw(addr, upload, "vm", "52:54:00:00:00:01");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .text()
        .starts_with("#!/bin/sh\n# EDEPLOY_PROFILE=vm\nset -e\n"));
    assert_eq!(hostname(&r), "vm1");
    assert_eq!(used(&main.join("vm.cmdb")), 1);
    assert!(read(&main.join("vm.cmdb.orig")).starts_with("generate("));
    assert_eq!(read(&state), state0);
    let hw = read(&hw_of("vm", "52:54:00:00:00:01"));
    assert!(edeploy_hw::HardwareList::parse(&hw, "hw").is_ok(), "{hw}");
    // Reinstall: the same entry again, nothing more used.
    let r = upload_hw(addr, upload, "vm", "52:54:00:00:00:01");
    assert_eq!(hostname(&r), "vm1");
    assert_eq!(used(&main.join("vm.cmdb")), 1);

    // No match: 404 with a sh body; the hardware is recorded, nothing else changes.
    let r = upload_hw(addr, upload, "nothing", "52:54:00:00:00:02");
    assert_refused(&r, 404, "unable to match");
    assert!(hw_of("nothing", "52:54:00:00:00:02").exists());
    assert_eq!(read(&state), state0);

    // $$mac picks the machine's own entry, again on reinstall; an unknown MAC is refused.
    let known = main.join("known.cmdb");
    for _ in 0..2 {
        let r = upload_hw(addr, upload, "known", "52:54:00:00:0a:02");
        assert_eq!(hostname(&r), "known2");
    }
    assert_eq!(used(&known), 1);
    let r = upload_hw(addr, upload, "known", "52:54:00:00:0b:01");
    assert_refused(&r, 409, "no entry matched");
    assert_eq!(used(&known), 1);

    // Quota: small takes one machine, the next small machine falls through to vm ('*').
    let r = upload_hw(addr, upload, "small", "52:54:00:00:00:03");
    assert!(
        r.text().contains("# EDEPLOY_PROFILE=small\n"),
        "{}",
        r.text()
    );
    assert!(read(&state).contains("('small', 0)"), "{}", read(&state));
    let r = upload_hw(addr, upload, "small", "52:54:00:00:00:04");
    assert!(r.text().contains("# EDEPLOY_PROFILE=vm\n"), "{}", r.text());
    assert_eq!(hostname(&r), "vm2");
    // CMDB exhausted: 409, nothing written.
    let (s1, c1) = (read(&state), read(&main.join("vm.cmdb")));
    let r = upload_hw(addr, upload, "vm", "52:54:00:00:00:05");
    assert_refused(&r, 409, "no more entry");
    assert_eq!((read(&state), read(&main.join("vm.cmdb"))), (s1, c1));

    // Every quota used: 409 (section TIGHT).
    let tight = |mac: &str| {
        let hw = fixture::hw_json("any", mac);
        post(
            addr,
            upload,
            &[
                ("section", None, b"TIGHT"),
                ("file", Some("hw.json"), hw.as_bytes()),
            ],
        )
    };
    assert!(tight("52:54:00:00:00:06").text().contains("PROFILE=only"));
    assert_eq!(read(&dir.join("tight/state")).trim(), "[('only', 0)]");
    assert_refused(&tight("52:54:00:00:00:07"), 409, "no more profile");

    // Failure report: the unit comes back; it never matches; '*' is left alone.
    let hw = fixture::hw_json("small", "52:54:00:00:00:03");
    let r = post(
        addr,
        upload,
        &[
            ("failure", None, b"small"),
            ("file", Some("hw.json"), hw.as_bytes()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("EDEPLOY_PROFILE"));
    assert!(read(&state).contains("('small', 1)"));
    let before = read(&state);
    let r = post(addr, upload, &[("failure", None, b"vm")]);
    assert!(r.text().contains("quota unchanged"), "{}", r.text());
    assert_eq!(read(&state), before);

    // Log upload: the older copy is kept under a timestamped name.
    for content in [&b"first"[..], b"second"] {
        let r = post(addr, upload, &[("file", Some("m1.log.gz"), content)]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let logs: Vec<_> = fs::read_dir(dir.join("logs")).unwrap().flatten().collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(read(&dir.join("logs/m1.log.gz")), "second");

    // Health upload, with and without a session.
    let hw = fixture::hw_json("vm", "52:54:00:00:00:08");
    let r = post(
        addr,
        health,
        &[
            ("session", None, b"bench1"),
            ("file", Some("hw.json"), hw.as_bytes()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(dir
        .join(format!(
            "health/bench1/{}.hw",
            fixture::sysname("vm", "52:54:00:00:00:08")
        ))
        .exists());
    let r = post(addr, health, &[("file", Some("hw.json"), hw.as_bytes())]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fs::read_dir(dir.join("health")).unwrap().count(), 2);

    // Hostile names are refused before anything is written.
    let snapshot = || {
        let mut v: Vec<String> = walk(dir);
        v.sort();
        v
    };
    let files0 = snapshot();
    let hw = fixture::hw_json("vm", "52:54:00:00:00:09");
    for (fields, what) in [
        (vec![("section", None, &b"../main"[..])], "section"),
        (vec![("section", None, &b"SER\x01VER"[..])], "section"),
        (
            vec![("file", Some("../../evil.log.gz"), &b"x"[..])],
            "log file",
        ),
        (vec![("file", Some(".."), &b"x"[..])], "bad hardware"),
        (vec![("failure", None, &b"../state"[..])], "profile"),
    ] {
        let mut f = fields.clone();
        if what == "section" {
            f.push(("file", Some("hw.json"), hw.as_bytes()));
        }
        assert_refused(&post(addr, upload, &f), 400, what);
    }
    let r = post(
        addr,
        health,
        &[
            ("session", None, b"a/b"),
            ("file", Some("hw.json"), hw.as_bytes()),
        ],
    );
    assert_refused(&r, 400, "session");
    // Oversized, malformed JSON, not multipart.
    let big = vec![b'['; MAX_UPLOAD + 1];
    assert_refused(
        &post(addr, upload, &[("file", Some("hw.json"), &big)]),
        413,
        "larger",
    );
    let r = post(
        addr,
        upload,
        &[("file", Some("hw.json"), b"[[\"disk\", \"sda\"")],
    );
    assert_refused(&r, 400, "bad hardware list");
    let r = request(addr, "POST", upload, "application/json", b"[]").unwrap();
    assert_refused(&r, 400, "multipart");
    assert_eq!(snapshot(), files0, "a refused request wrote something");
    assert!(!dir.join("evil.log.gz").exists());
}

/// Every file under `dir` (relative paths), the lock file aside.
pub fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// A config layout for the tree routes: `DIR/edeploy.conf` with `DIR/config`, `hw`, `logs`,
/// `health`; trees, metadata and store at the conf's defaults (`DIR/install`, `DIR/metadata`,
/// `DIR/store`).
pub fn tree_conf(dir: &Path) -> PathBuf {
    for d in ["config", "hw", "logs", "health"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let conf = dir.join("edeploy.conf");
    fs::write(
        &conf,
        "[SERVER]\nCONFIGDIR=config\nHWDIR=hw\nLOGDIR=logs\nHEALTHDIR=health\nLOCKFILE=lock\n",
    )
    .unwrap();
    conf
}
