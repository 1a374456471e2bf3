//! The CGI front end under a real lighttpd (Debian's package, `.ci/packages`), started here as a
//! child in the foreground on a free loopback port: the same scenarios as the embedded server.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use edeploy_server::fixture;

fn lighttpd_bin() -> String {
    for p in ["/usr/sbin/lighttpd", "/usr/bin/lighttpd"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!(
        "lighttpd is not installed: the CGI tests need it (apt-get install lighttpd; \
         .ci/packages lists it)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// lighttpd serving the edeploy-server binary as `cgi-bin/upload.py` and `upload-health.py`,
/// with EDEPLOY_CONF set for the CGI through mod_setenv.
pub fn lighttpd(dir: &Path, conf: &Path, max_upload: usize) -> (Proc, SocketAddr) {
    let www = dir.join("www");
    let cgi = dir.join("cgi-bin");
    fs::create_dir_all(&www).unwrap();
    fs::create_dir_all(&cgi).unwrap();
    for name in ["upload.py", "upload-health.py"] {
        fs::copy(bin(), cgi.join(name)).unwrap();
    }
    let port = free_port();
    let lconf = dir.join("lighttpd.conf");
    fs::write(
        &lconf,
        format!(
            "server.document-root = \"{www}\"\n\
             server.bind = \"127.0.0.1\"\n\
             server.port = {port}\n\
             server.errorlog = \"{dir}/lighttpd-error.log\"\n\
             server.modules = (\"mod_alias\", \"mod_setenv\", \"mod_cgi\")\n\
             alias.url = (\"/cgi-bin/\" => \"{cgi}/\")\n\
             setenv.add-environment = (\"EDEPLOY_CONF\" => \"{conf}\", \
                                       \"EDEPLOY_MAX_UPLOAD\" => \"{max_upload}\")\n\
             $HTTP[\"url\"] =~ \"^/cgi-bin/\" {{ cgi.assign = (\"\" => \"\") }}\n",
            www = www.display(),
            dir = dir.display(),
            cgi = cgi.display(),
            conf = conf.display(),
        ),
    )
    .unwrap();
    let child = Command::new(lighttpd_bin())
        .args(["-D", "-f"])
        .arg(&lconf)
        .stdin(Stdio::null())
        .spawn()
        .expect("start lighttpd");
    let p = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_port(addr);
    (p, addr)
}

#[test]
fn cgi_scenarios_under_lighttpd() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let conf = fixture::scenario_config(&data).unwrap();
    let (_l, addr) = lighttpd(d.path(), &conf, MAX_UPLOAD);
    scenarios(
        addr,
        &data,
        "/cgi-bin/upload.py",
        "/cgi-bin/upload-health.py",
    );
}
