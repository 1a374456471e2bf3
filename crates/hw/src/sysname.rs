use crate::HardwareList;

/// The name a machine's files are saved under: `[name-|vendor-][serial-]<first-mac-with-dashes>`.
///
/// This is the rule of eDeploy's successor (`hardware` library): the product name wins over the
/// vendor, each part keeps only word characters, and the first NIC's MAC ends it. The result holds
/// only `[A-Za-z0-9_-]`, so it is always a safe file name; `None` when there is no NIC and no part.
pub fn sysname(hw: &HardwareList) -> Option<String> {
    let word = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric() || *c == '_')
            .filter(char::is_ascii)
            .collect()
    };
    let mut name = String::new();
    if let Some(v) = hw.get("system", "product", "vendor") {
        name = word(v) + "-";
    }
    if let Some(n) = hw.get("system", "product", "name") {
        name = word(n) + "-";
    }
    if let Some(s) = hw.get("system", "product", "serial") {
        name += &(word(s) + "-");
    }
    let mac = hw
        .lines()
        .iter()
        .find(|l| l.category() == "network" && l.key() == "serial")
        .map(|l| l.value().replace(':', "-"));
    match mac {
        Some(m) => {
            let m: String = m
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            name += &m;
        }
        None if name.is_empty() => return None,
        None => {
            name.pop();
        }
    }
    (!name.is_empty() && name != "-").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_rule() {
        let mut hw = HardwareList::new();
        hw.push("system", "product", "vendor", "Dell Inc.");
        hw.push("network", "eth0", "serial", "52:54:00:aa:bb:cc");
        assert_eq!(sysname(&hw).unwrap(), "DellInc-52-54-00-aa-bb-cc");
        hw.push("system", "product", "name", "PowerEdge R630 (SKU=1)");
        hw.push("system", "product", "serial", "ABC/123");
        assert_eq!(
            sysname(&hw).unwrap(),
            "PowerEdgeR630SKU1-ABC123-52-54-00-aa-bb-cc"
        );
        assert_eq!(sysname(&HardwareList::new()), None);
    }

    #[test]
    fn hostile_values_never_escape_the_directory() {
        let mut hw = HardwareList::new();
        hw.push("system", "product", "name", "../../etc/passwd\0");
        hw.push("network", "eth0", "serial", "../x/\n");
        let n = sysname(&hw).unwrap();
        assert!(
            !n.contains('/') && !n.contains("..") && !n.contains('\0'),
            "{n}"
        );
    }
}
