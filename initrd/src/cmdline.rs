//! The kernel command line (DESIGN §6): eDeploy's variables with eDeploy's defaults, parsed once
//! into a typed [`Params`] so a bad value is reported before anything is done with it.
//!
//! Words between `|` … `|` are not ours: they are kept verbatim as the installed system's extra
//! kernel arguments ([`Params::boot_args`]).

use std::fmt;
use std::net::IpAddr;

/// What to do at the end (ONSUCCESS) or after a failure (ONFAILURE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reboot,
    Halt,
    Kexec,
    Console,
}

impl Action {
    fn parse(var: &str, s: &str) -> Result<Action, CmdlineError> {
        Ok(match s {
            "reboot" => Action::Reboot,
            "halt" | "poweroff" => Action::Halt,
            "kexec" => Action::Kexec,
            "console" => Action::Console,
            _ => return Err(bad(var, s, "expected reboot, halt, kexec or console")),
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Reboot => "reboot",
            Action::Halt => "halt",
            Action::Kexec => "kexec",
            Action::Console => "console",
        })
    }
}

/// Which interfaces an `IP=` rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every interface (the default rule); cannot be combined with other rules.
    All,
    /// Every interface not named by another rule.
    Other,
    Iface(String),
}

/// How an interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Dhcp,
    /// Left alone (not even brought up).
    None,
    /// A static address with its prefix length, e.g. `10.0.0.5/24`.
    Static {
        addr: IpAddr,
        prefix: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    pub target: Target,
    pub method: Method,
    /// `@VLAN`: the address goes on `IF.VLAN`, a VLAN interface on top of `IF`.
    pub vlan: Option<u16>,
}

/// Every variable `/init` reads, with eDeploy's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub serv: String,
    pub http_port: u16,
    /// Always starts and ends with `/` (eDeploy concatenated it loosely: normalised here).
    pub http_path: String,
    pub section: String,
    /// Defaults to SERV.
    pub rserv: String,
    pub rserv_port: u16,
    pub rpath: String,
    pub hserv: Option<String>,
    pub hserv_port: u16,
    pub hpath: String,
    pub onsuccess: Action,
    pub onfailure: Action,
    pub debug: bool,
    pub verbose: bool,
    pub upload_log: bool,
    pub ip: Vec<IpRule>,
    /// Seconds to wait for carrier on an interface that was brought up.
    pub link_up_timeout: u64,
    pub kexec_kernel: Option<String>,
    pub os: Option<String>,
    pub os_ver: Option<String>,
    /// Ed25519 public key (64 hex digits) the role manifest must be signed with.
    pub pubkey: Option<String>,
    /// The words between `|` … `|`, for the installed system's kernel command line.
    pub boot_args: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            serv: "10.0.0.1".into(),
            http_port: 80,
            http_path: "/cgi-bin/".into(),
            section: "SERVER".into(),
            rserv: "10.0.0.1".into(),
            rserv_port: 873,
            rpath: "install".into(),
            hserv: None,
            hserv_port: 80,
            hpath: "install".into(),
            onsuccess: Action::Reboot,
            onfailure: Action::Halt,
            debug: false,
            verbose: false,
            upload_log: false,
            ip: vec![IpRule {
                target: Target::All,
                method: Method::Dhcp,
                vlan: None,
            }],
            link_up_timeout: 10,
            kexec_kernel: None,
            os: None,
            os_ver: None,
            pubkey: None,
            boot_args: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("{var}={value:?}: {why}")]
    Bad {
        var: String,
        value: String,
        why: String,
    },
    #[error("unterminated '|' boot arguments (expected '| args |')")]
    Unterminated,
}

fn bad(var: &str, value: &str, why: &str) -> CmdlineError {
    CmdlineError::Bad {
        var: var.into(),
        value: value.into(),
        why: why.into(),
    }
}

fn flag(var: &str, v: &str) -> Result<bool, CmdlineError> {
    match v {
        "1" => Ok(true),
        "0" | "" => Ok(false),
        _ => Err(bad(var, v, "expected 0 or 1")),
    }
}

fn port(var: &str, v: &str) -> Result<u16, CmdlineError> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(var, v, "expected a TCP port (1-65535)")),
    }
}

/// A host name or address for a URL: no spaces, slashes or other URL delimiters.
fn host(var: &str, v: &str) -> Result<String, CmdlineError> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || "/?#@".contains(c)) {
        return Err(bad(var, v, "expected a host name or IP address"));
    }
    Ok(v.to_string())
}

/// Splits on whitespace, honouring the kernel's double quotes (`VAR="a b"` is one word, quotes
/// removed) so a quoted value reads as the kernel itself passes it to init.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Parses `IP=`: a comma list of `<iface|all|other>:<dhcp|none|CIDR>[@vlan]`.
pub fn parse_ip(v: &str) -> Result<Vec<IpRule>, CmdlineError> {
    let err = |why: &str| bad("IP", v, why);
    let mut rules: Vec<IpRule> = Vec::new();
    for item in v.split(',') {
        let (target, rest) = item.split_once(':').ok_or_else(|| {
            err(&format!(
                "{item:?}: expected <iface|all|other>:<dhcp|none|CIDR>[@vlan]"
            ))
        })?;
        let target = match target {
            "all" => Target::All,
            "other" => Target::Other,
            "" => return Err(err(&format!("{item:?}: empty interface name"))),
            t if t.len() > 15 || t.contains(['/', '.', '@']) => {
                return Err(err(&format!("{t:?} is not an interface name")))
            }
            t => Target::Iface(t.into()),
        };
        let (method, vlan) = match rest.split_once('@') {
            Some((m, vl)) => match vl.parse::<u16>() {
                Ok(n) if (1..=4094).contains(&n) => (m, Some(n)),
                _ => return Err(err(&format!("VLAN {vl:?} is not in 1-4094"))),
            },
            None => (rest, None),
        };
        let method = match method {
            "dhcp" => Method::Dhcp,
            "none" => Method::None,
            cidr => {
                let (a, p) = cidr.split_once('/').ok_or_else(|| {
                    err(&format!("{cidr:?}: expected dhcp, none or ADDRESS/PREFIX"))
                })?;
                let addr: IpAddr = a
                    .parse()
                    .map_err(|_| err(&format!("{a:?} is not an IP address")))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                match p.parse::<u8>() {
                    Ok(prefix) if prefix <= max => Method::Static { addr, prefix },
                    _ => return Err(err(&format!("prefix {p:?} is not in 0-{max}"))),
                }
            }
        };
        if vlan.is_some() && method == Method::None {
            return Err(err("none@VLAN makes no sense"));
        }
        if rules.iter().any(|r| r.target == target) {
            return Err(err(&format!("{target:?} appears twice")));
        }
        rules.push(IpRule {
            target,
            method,
            vlan,
        });
    }
    // `all` next to another rule would make that rule's precedence a guess: `other` says it.
    if rules.len() > 1 && rules.iter().any(|r| r.target == Target::All) {
        return Err(err(
            "'all' cannot be combined with other rules (use 'other')",
        ));
    }
    Ok(rules)
}

impl Params {
    /// Parses the text of `/proc/cmdline`. Unknown words (kernel parameters, `console=`…) are
    /// ignored; a known variable with a bad value is an error naming it.
    pub fn parse(cmdline: &str) -> Result<Params, CmdlineError> {
        let parts: Vec<&str> = cmdline.split('|').collect();
        if parts.len() == 2 {
            return Err(CmdlineError::Unterminated);
        }
        let mut ours = String::from(parts[0]);
        let mut boot_args = String::new();
        if parts.len() >= 3 {
            // eDeploy took the first `|…|` group (`cut -d'|' -f2`); later text is ours again.
            boot_args = parts[1].split_whitespace().collect::<Vec<_>>().join(" ");
            ours.push(' ');
            ours.push_str(&parts[2..].join(" "));
        }
        let mut p = Params {
            boot_args,
            ..Params::default()
        };
        let mut rserv = None;
        let mut debug_onfailure = None;
        for w in words(&ours) {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            match k {
                "SERV" => p.serv = host(k, v)?,
                "HTTP_PORT" => p.http_port = port(k, v)?,
                "HTTP_PATH" => {
                    if v.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
                        return Err(bad(k, v, "not a URL path"));
                    }
                    let t = v.trim_matches('/');
                    p.http_path = if t.is_empty() {
                        "/".into()
                    } else {
                        format!("/{t}/")
                    };
                }
                "SECTION" => {
                    if v.is_empty() {
                        return Err(bad(k, v, "empty section"));
                    }
                    p.section = v.into();
                }
                "RSERV" => rserv = Some(host(k, v)?),
                "RSERV_PORT" => p.rserv_port = port(k, v)?,
                "RPATH" => p.rpath = v.into(),
                "HSERV" => p.hserv = (!v.is_empty()).then(|| host(k, v)).transpose()?,
                "HSERV_PORT" => p.hserv_port = port(k, v)?,
                "HPATH" => p.hpath = v.into(),
                "ONSUCCESS" => p.onsuccess = Action::parse(k, v)?,
                "ONFAILURE" => p.onfailure = Action::parse(k, v)?,
                "DEBUG" => {
                    p.debug = flag(k, v)?;
                    // eDeploy: DEBUG=1 is the deprecated spelling of ONFAILURE=console.
                    if p.debug {
                        debug_onfailure = Some(Action::Console);
                    }
                }
                "VERBOSE" => p.verbose = flag(k, v)?,
                "UPLOAD_LOG" => p.upload_log = flag(k, v)?,
                "IP" => p.ip = parse_ip(v)?,
                "LINK_UP_TIMEOUT" => {
                    p.link_up_timeout = v
                        .parse()
                        .ok()
                        .filter(|n| *n <= 3600)
                        .ok_or_else(|| bad(k, v, "expected seconds (0-3600)"))?
                }
                "KEXEC_KERNEL" => p.kexec_kernel = (!v.is_empty()).then(|| v.into()),
                "OS" => p.os = (!v.is_empty()).then(|| v.into()),
                "OS_VER" => p.os_ver = (!v.is_empty()).then(|| v.into()),
                "PUBKEY" => {
                    if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(bad(k, v, "expected 64 hex digits (an Ed25519 public key)"));
                    }
                    p.pubkey = Some(v.to_ascii_lowercase());
                }
                _ => {}
            }
        }
        p.rserv = rserv.unwrap_or_else(|| p.serv.clone());
        if let Some(a) = debug_onfailure {
            p.onfailure = a;
        }
        Ok(p)
    }

    /// `http://SERV:HTTP_PORT` (the tree routes hang off the server root).
    pub fn server_base(&self) -> String {
        format!("http://{}:{}", self.serv, self.http_port)
    }

    /// The upload URL: `http://SERV:HTTP_PORT{HTTP_PATH}upload.py`.
    pub fn upload_url(&self) -> String {
        format!("{}{}upload.py", self.server_base(), self.http_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_edeploys() {
        let p = Params::parse("BOOT_IMAGE=vmlinuz console=ttyS0 quiet").unwrap();
        assert_eq!(p, Params::default());
        assert_eq!(p.upload_url(), "http://10.0.0.1:80/cgi-bin/upload.py");
        assert_eq!(p.rserv, "10.0.0.1");
        assert_eq!(p.onsuccess, Action::Reboot);
        assert_eq!(p.onfailure, Action::Halt);
        assert_eq!(p.ip, parse_ip("all:dhcp").unwrap());
    }

    #[test]
    fn every_variable() {
        let p = Params::parse(
            "console=ttyS0 SERV=10.0.2.2 HTTP_PORT=8080 HTTP_PATH=edeploy SECTION=LAB \
             RSERV=r.example RSERV_PORT=8873 RPATH=trees HSERV=h HSERV_PORT=81 HPATH=img \
             ONSUCCESS=kexec ONFAILURE=console VERBOSE=1 UPLOAD_LOG=1 IP=eth0:dhcp,other:none \
             LINK_UP_TIMEOUT=3 KEXEC_KERNEL=6.1.0-9 OS=Debian OS_VER=12 \
             PUBKEY=00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff",
        )
        .unwrap();
        assert_eq!(p.upload_url(), "http://10.0.2.2:8080/edeploy/upload.py");
        assert_eq!(p.section, "LAB");
        assert_eq!((p.rserv.as_str(), p.rserv_port), ("r.example", 8873));
        assert_eq!(p.rpath, "trees");
        assert_eq!(p.hserv.as_deref(), Some("h"));
        assert_eq!((p.hserv_port, p.hpath.as_str()), (81, "img"));
        assert_eq!((p.onsuccess, p.onfailure), (Action::Kexec, Action::Console));
        assert!(p.verbose && p.upload_log && !p.debug);
        assert_eq!(p.link_up_timeout, 3);
        assert_eq!(p.kexec_kernel.as_deref(), Some("6.1.0-9"));
        assert_eq!(
            (p.os.as_deref(), p.os_ver.as_deref()),
            (Some("Debian"), Some("12"))
        );
        assert_eq!(
            p.pubkey.as_deref(),
            Some("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
        );
        assert_eq!(p.ip.len(), 2);
        assert_eq!(p.ip[1].target, Target::Other);
        assert_eq!(p.ip[1].method, Method::None);
    }

    #[test]
    fn http_path_joins_cleanly() {
        for (v, url) in [
            ("/cgi-bin/", "http://10.0.0.1:80/cgi-bin/upload.py"),
            ("cgi-bin", "http://10.0.0.1:80/cgi-bin/upload.py"),
            ("//a/b//", "http://10.0.0.1:80/a/b/upload.py"),
            ("/", "http://10.0.0.1:80/upload.py"),
        ] {
            let p = Params::parse(&format!("HTTP_PATH={v}")).unwrap();
            assert_eq!(p.upload_url(), url, "{v}");
        }
    }

    #[test]
    fn debug_means_console_on_failure() {
        let p = Params::parse("ONFAILURE=reboot DEBUG=1").unwrap();
        assert!(p.debug);
        assert_eq!(p.onfailure, Action::Console);
    }

    #[test]
    fn boot_args_between_bars() {
        let p = Params::parse("SERV=1.2.3.4 | console=ttyS0,115200 nomodeset  | ONSUCCESS=halt")
            .unwrap();
        assert_eq!(p.boot_args, "console=ttyS0,115200 nomodeset");
        assert_eq!(p.onsuccess, Action::Halt);
        // Variables inside the bars belong to the installed system, not to us.
        let p = Params::parse("|SERV=9.9.9.9|").unwrap();
        assert_eq!(p.serv, "10.0.0.1");
        assert_eq!(p.boot_args, "SERV=9.9.9.9");
        assert_eq!(
            Params::parse("SERV=1.2.3.4 | console=ttyS0").unwrap_err(),
            CmdlineError::Unterminated
        );
    }

    #[test]
    fn quoted_words() {
        let p = Params::parse("SECTION=\"MY LAB\" SERV=a").unwrap();
        assert_eq!(p.section, "MY LAB");
        assert_eq!(p.serv, "a");
    }

    #[test]
    fn ip_rules() {
        let r = parse_ip("eth0:10.0.0.5/24@100,eth1:dhcp@7,other:none").unwrap();
        assert_eq!(
            r[0],
            IpRule {
                target: Target::Iface("eth0".into()),
                method: Method::Static {
                    addr: "10.0.0.5".parse().unwrap(),
                    prefix: 24
                },
                vlan: Some(100)
            }
        );
        assert_eq!(r[1].method, Method::Dhcp);
        assert_eq!(r[1].vlan, Some(7));
        assert_eq!(r[2].target, Target::Other);
        let r = parse_ip("all:none").unwrap();
        assert_eq!(r[0].method, Method::None);
        assert!(parse_ip("ens3:fd00::5/64").is_ok());
    }

    #[test]
    fn bad_values_are_clear() {
        let msg = |s: &str| Params::parse(s).unwrap_err().to_string();
        assert_eq!(
            msg("HTTP_PORT=http"),
            "HTTP_PORT=\"http\": expected a TCP port (1-65535)"
        );
        assert!(msg("HTTP_PORT=0").contains("TCP port"));
        assert!(msg("RSERV_PORT=70000").contains("RSERV_PORT"));
        assert!(msg("ONSUCCESS=explode").contains("expected reboot, halt, kexec or console"));
        assert!(msg("ONFAILURE=").contains("ONFAILURE"));
        assert!(msg("UPLOAD_LOG=yes").contains("expected 0 or 1"));
        assert!(msg("LINK_UP_TIMEOUT=-1").contains("seconds"));
        assert!(msg("SERV=a/b").contains("host name"));
        assert!(msg("SERV=").contains("host name"));
        assert!(msg("PUBKEY=abc").contains("64 hex"));
        assert!(msg("IP=eth0").contains("expected <iface|all|other>"));
        assert!(msg("IP=eth0:static").contains("ADDRESS/PREFIX"));
        assert!(msg("IP=eth0:10.0.0.300/24").contains("not an IP address"));
        assert!(msg("IP=eth0:10.0.0.3/33").contains("prefix"));
        assert!(msg("IP=eth0:dhcp@0").contains("VLAN"));
        assert!(msg("IP=eth0:dhcp@4095").contains("VLAN"));
        assert!(msg("IP=eth0:none@5").contains("none@VLAN"));
        assert!(msg("IP=eth0:dhcp,eth0:none").contains("twice"));
        assert!(msg("IP=all:dhcp,eth0:none").contains("'all' cannot be combined"));
        assert!(msg("IP=:dhcp").contains("empty interface"));
        assert!(msg("IP=eth0.5:dhcp").contains("not an interface name"));
    }
}
