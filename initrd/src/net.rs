//! Network bring-up from the `IP=` rules (DESIGN §1 step 3). The plan (which interface gets
//! what, which commands run) is computed from the rules and the interface list alone, so it is
//! unit-tested; [`execute`] runs it with busybox `ip` and `udhcpc`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmdline::{IpRule, Method, Target};

/// The DHCP client's hook script, shipped by the image builder: it sets the address, routes
/// and /etc/resolv.conf with busybox `ip`.
pub const UDHCPC_SCRIPT: &str = "/usr/share/edeploy/udhcpc.script";

/// Start of the error when nothing got an address (the caller retries on it).
pub const NO_ADDRESS: &str = "no interface got an address";

/// What one interface gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfacePlan {
    pub iface: String,
    pub method: Method,
    pub vlan: Option<u16>,
}

impl IfacePlan {
    /// The interface that carries the address: `IF` or `IF.VLAN`.
    pub fn target(&self) -> String {
        match self.vlan {
            Some(v) => format!("{}.{v}", self.iface),
            None => self.iface.clone(),
        }
    }

    /// Commands (busybox applet + args) that create the VLAN interface, if any, and bring the
    /// address target up. The physical interface is brought up before (see [`link_up`]).
    pub fn setup_commands(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        if let Some(v) = self.vlan {
            let t = self.target();
            out.push(args(&[
                "ip",
                "link",
                "add",
                "link",
                &self.iface,
                "name",
                &t,
                "type",
                "vlan",
                "id",
                &v.to_string(),
            ]));
            out.push(args(&["ip", "link", "set", &t, "up"]));
        }
        out
    }

    /// The command that gives the target its address.
    pub fn address_command(&self) -> Option<Vec<String>> {
        let t = self.target();
        match &self.method {
            Method::None => None,
            Method::Dhcp => Some(args(&[
                "udhcpc",
                "-i",
                &t,
                "-s",
                UDHCPC_SCRIPT,
                "-q",
                "-n",
                "-t",
                "5",
            ])),
            // `replace`, not `add`: a retried round (or a rerun) finds the address already set.
            Method::Static { addr, prefix } => Some(args(&[
                "ip",
                "addr",
                "replace",
                &format!("{addr}/{prefix}"),
                "dev",
                &t,
            ])),
        }
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `ip link set IF up`.
pub fn link_up(iface: &str) -> Vec<String> {
    args(&["ip", "link", "set", iface, "up"])
}

/// Network interfaces under `ROOT/sys/class/net`, without `lo`, sorted.
pub fn interfaces(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.join("sys/class/net"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Applies eDeploy's rules: a named rule wins; `other` covers every interface not named;
/// `all` covers everything. Interfaces that end with `none` are left out. A named interface
/// that does not exist is an error (a typo would otherwise silently leave the machine offline).
pub fn plan(rules: &[IpRule], ifaces: &[String]) -> Result<Vec<IfacePlan>, String> {
    for r in rules {
        if let Target::Iface(n) = &r.target {
            if !ifaces.contains(n) {
                return Err(format!(
                    "IP= names interface {n} which does not exist (have: {})",
                    if ifaces.is_empty() {
                        "none".to_string()
                    } else {
                        ifaces.join(" ")
                    }
                ));
            }
        }
    }
    let mut out = Vec::new();
    for i in ifaces {
        let rule = rules
            .iter()
            .find(|r| r.target == Target::Iface(i.clone()))
            .or_else(|| {
                rules
                    .iter()
                    .find(|r| matches!(r.target, Target::Other | Target::All))
            });
        if let Some(r) = rule {
            if r.method != Method::None {
                out.push(IfacePlan {
                    iface: i.clone(),
                    method: r.method.clone(),
                    vlan: r.vlan,
                });
            }
        }
    }
    Ok(out)
}

/// `ROOT/sys/class/net/IF/carrier` says 1 (reading it fails while the link is down).
pub fn has_carrier(root: &Path, iface: &str) -> bool {
    fs::read_to_string(root.join("sys/class/net").join(iface).join("carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

/// The interface a packet to `dest` leaves by, from `ROOT/proc/net/route` (longest prefix;
/// the default route when `dest` is not an IPv4 literal, e.g. a host name).
pub fn route_iface(root: &Path, dest: &str) -> Option<String> {
    let text = fs::read_to_string(root.join("proc/net/route")).ok()?;
    let dest: Option<u32> = dest.parse::<Ipv4Addr>().ok().map(u32::from);
    let mut best: Option<(u32, String)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // The kernel prints the address as the in-memory (network order) u32 in host order.
        let hex = |s: &str| {
            u32::from_str_radix(s, 16)
                .ok()
                .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
        };
        let (Some(net), Some(mask)) = (hex(f[1]), hex(f[7])) else {
            continue;
        };
        let matches = match dest {
            Some(d) => d & mask == net & mask,
            None => mask == 0,
        };
        let len = mask.count_ones();
        if matches && best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, f[0].to_string()));
        }
    }
    best.map(|(_, i)| i)
}

/// The MAC of `iface`, lower-case with colons.
pub fn mac(root: &Path, iface: &str) -> Option<String> {
    let s = fs::read_to_string(root.join("sys/class/net").join(iface).join("address")).ok()?;
    let s = s.trim().to_ascii_lowercase();
    (!s.is_empty() && s != "00:00:00:00:00:00").then_some(s)
}

fn busybox(a: &[String]) -> Command {
    let mut c = Command::new("busybox");
    c.args(a);
    c
}

/// Runs a busybox command, output to the log; its failure as a message.
fn run(a: &[String], log: &dyn Fn(&str)) -> Result<(), String> {
    log(&format!("run: {}", a.join(" ")));
    let out = busybox(a)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("busybox {}: {e}", a[0]))?;
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        log(&format!("  {l}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({})", a.join(" "), out.status))
    }
}

/// Brings the network up. Returns the targets that got an address; an error when none did.
pub fn execute(
    root: &Path,
    rules: &[IpRule],
    link_up_timeout: Duration,
    log: &dyn Fn(&str),
) -> Result<Vec<String>, String> {
    let ifaces = interfaces(root);
    let plans = plan(rules, &ifaces)?;
    if plans.is_empty() {
        return Err(format!(
            "no interface to configure (interfaces: {}; IP= rules leave none)",
            if ifaces.is_empty() {
                "none: missing driver?".to_string()
            } else {
                ifaces.join(" ")
            }
        ));
    }
    let _ = run(&link_up("lo"), log);
    for p in &plans {
        if let Err(e) = run(&link_up(&p.iface), log) {
            log(&format!("warning: {e}"));
        }
    }
    // Carrier takes a moment after `up`; wait for all of them together, not one after another.
    let deadline = Instant::now() + link_up_timeout;
    loop {
        if plans.iter().all(|p| has_carrier(root, &p.iface)) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut done = Vec::new();
    for p in &plans {
        if !has_carrier(root, &p.iface) {
            log(&format!(
                "{}: no carrier after {}s, skipped",
                p.iface,
                link_up_timeout.as_secs()
            ));
            continue;
        }
        // A VLAN interface left by an earlier round is reused, not created again.
        let exists = root.join("sys/class/net").join(p.target()).exists();
        let setup: Vec<Vec<String>> = p
            .setup_commands()
            .into_iter()
            .filter(|c| !(exists && c.get(2).is_some_and(|a| a == "add")))
            .collect();
        if let Err(e) = setup.iter().try_for_each(|c| run(c, log)) {
            log(&format!("{}: {e}", p.target()));
            continue;
        }
        let Some(cmd) = p.address_command() else {
            continue;
        };
        if p.method == Method::Dhcp {
            // DHCP clients run side by side: each can take seconds to give up.
            log(&format!("run: {}", cmd.join(" ")));
            match busybox(&cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            {
                Ok(c) => children.push((p.target(), c)),
                Err(e) => log(&format!("{}: udhcpc: {e}", p.target())),
            }
        } else if let Err(e) = run(&cmd, log) {
            log(&format!("{}: {e}", p.target()));
        } else {
            done.push(p.target());
        }
    }
    for (t, c) in children {
        match c.wait_with_output() {
            Ok(out) => {
                for l in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                {
                    log(&format!("  {t}: {l}"));
                }
                if out.status.success() {
                    done.push(t);
                } else {
                    log(&format!("{t}: no DHCP lease ({})", out.status));
                }
            }
            Err(e) => log(&format!("{t}: udhcpc: {e}")),
        }
    }
    if done.is_empty() {
        return Err(format!("{NO_ADDRESS} (no carrier or no DHCP answer)"));
    }
    done.sort();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse_ip;

    fn ifs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_rule_is_dhcp_everywhere() {
        let p = plan(&parse_ip("all:dhcp").unwrap(), &ifs(&["eth0", "eth1"])).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1].address_command().unwrap().join(" "),
            "udhcpc -i eth1 -s /usr/share/edeploy/udhcpc.script -q -n -t 5"
        );
        assert!(p[0].setup_commands().is_empty());
        assert_eq!(link_up("eth0").join(" "), "ip link set eth0 up");
    }

    #[test]
    fn named_rules_win_and_other_takes_the_rest() {
        let rules = parse_ip("eth1:10.0.0.5/24@100,other:none").unwrap();
        let p = plan(&rules, &ifs(&["eth0", "eth1", "eth2"])).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].iface, "eth1");
        assert_eq!(p[0].target(), "eth1.100");
        let setup: Vec<String> = p[0].setup_commands().iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            setup,
            [
                "ip link add link eth1 name eth1.100 type vlan id 100",
                "ip link set eth1.100 up"
            ]
        );
        assert_eq!(
            p[0].address_command().unwrap().join(" "),
            "ip addr replace 10.0.0.5/24 dev eth1.100"
        );

        let rules = parse_ip("eth0:none,other:dhcp").unwrap();
        let p = plan(&rules, &ifs(&["eth0", "eth1", "eth2"])).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.iface.as_str()).collect();
        assert_eq!(names, ["eth1", "eth2"]);

        // Without `other`, unnamed interfaces are left alone.
        let p = plan(&parse_ip("eth2:dhcp").unwrap(), &ifs(&["eth0", "eth2"])).unwrap();
        assert_eq!(p.len(), 1);
        assert!(plan(&parse_ip("all:none").unwrap(), &ifs(&["eth0"]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unknown_interface_is_an_error() {
        let e = plan(&parse_ip("eth9:dhcp").unwrap(), &ifs(&["eth0"])).unwrap_err();
        assert!(e.contains("eth9") && e.contains("eth0"), "{e}");
    }

    #[test]
    fn sysfs_reading() {
        let d = tempfile::tempdir().unwrap();
        let net = d.path().join("sys/class/net");
        for (i, carrier) in [("lo", "1"), ("eth0", "1"), ("eth1", "0")] {
            fs::create_dir_all(net.join(i)).unwrap();
            fs::write(net.join(i).join("carrier"), format!("{carrier}\n")).unwrap();
        }
        fs::write(net.join("eth0/address"), "52:54:00:AB:CD:EF\n").unwrap();
        assert_eq!(interfaces(d.path()), ["eth0", "eth1"]);
        assert!(has_carrier(d.path(), "eth0") && !has_carrier(d.path(), "eth1"));
        assert!(!has_carrier(d.path(), "eth7"));
        assert_eq!(mac(d.path(), "eth0").as_deref(), Some("52:54:00:ab:cd:ef"));
    }

    #[test]
    fn routes() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("proc/net")).unwrap();
        // 10.0.2.0/24 on eth0, 192.168.1.0/24 on eth1, default via 10.0.2.2 on eth0.
        fs::write(
            d.path().join("proc/net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth1\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )
        .unwrap();
        assert_eq!(
            route_iface(d.path(), "192.168.1.7").as_deref(),
            Some("eth1")
        );
        assert_eq!(route_iface(d.path(), "10.0.2.2").as_deref(), Some("eth0"));
        assert_eq!(route_iface(d.path(), "8.8.8.8").as_deref(), Some("eth0"));
        assert_eq!(
            route_iface(d.path(), "edeploy.example").as_deref(),
            Some("eth0")
        );
    }
}
