//! What the harness reads from a guest's serial console: the step markers `/init` prints and the
//! tiny role's first-boot lines. Pure, so the parser is tested on text.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    StepStart(String),
    StepOk(String, u64),
    StepFailed(String, String),
    Installed(u64),
    RoleBooted(String),
    ReportSent,
    ReportFailed,
}

/// Finds a marker anywhere in the line: kernel messages and `\r` may share a console line.
pub fn parse_line(line: &str) -> Option<Marker> {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(i) = line.find("edeploy-init: ") {
        let rest = &line[i + "edeploy-init: ".len()..];
        if let Some(ms) = rest.strip_prefix("installed in ") {
            return Some(Marker::Installed(leading_number(ms)?));
        }
        let rest = rest.strip_prefix("step ")?;
        let (name, what) = rest.split_once(' ')?;
        if what == "start" {
            return Some(Marker::StepStart(name.to_string()));
        }
        if let Some(ms) = what.strip_prefix("ok (") {
            return Some(Marker::StepOk(name.to_string(), leading_number(ms)?));
        }
        if let Some(reason) = what.strip_prefix("FAILED: ") {
            return Some(Marker::StepFailed(name.to_string(), reason.to_string()));
        }
        return None;
    }
    if let Some(i) = line.find("edeploy-role: ") {
        let rest = &line[i + "edeploy-role: ".len()..];
        if let Some(name) = rest.strip_prefix("booted ") {
            return Some(Marker::RoleBooted(name.trim().to_string()));
        }
        return match rest.trim() {
            "boot report sent" => Some(Marker::ReportSent),
            "boot report FAILED" => Some(Marker::ReportFailed),
            _ => None,
        };
    }
    None
}

fn leading_number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The markers of one boot, each with the time (since power-on) the harness saw it.
#[derive(Debug, Default)]
pub struct Timeline {
    pub events: Vec<(Duration, Marker)>,
}

impl Timeline {
    pub fn push(&mut self, at: Duration, m: Marker) {
        self.events.push((at, m));
    }

    pub fn find(&self, want: impl Fn(&Marker) -> bool) -> Option<(Duration, &Marker)> {
        self.events
            .iter()
            .find(|(_, m)| want(m))
            .map(|(t, m)| (*t, m))
    }

    /// The first step that failed, with its reason.
    pub fn failed(&self) -> Option<(&str, &str)> {
        self.events.iter().find_map(|(_, m)| match m {
            Marker::StepFailed(s, r) => Some((s.as_str(), r.as_str())),
            _ => None,
        })
    }

    /// `(step, duration in ms as /init measured it)` in order.
    pub fn steps(&self) -> Vec<(&str, u64)> {
        self.events
            .iter()
            .filter_map(|(_, m)| match m {
                Marker::StepOk(s, ms) => Some((s.as_str(), *ms)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_markers() {
        assert_eq!(
            parse_line("edeploy-init: step upload start"),
            Some(Marker::StepStart("upload".into()))
        );
        assert_eq!(
            parse_line("[    9.1] edeploy-init: step install ok (2310 ms)\r"),
            Some(Marker::StepOk("install".into(), 2310))
        );
        assert_eq!(
            parse_line("edeploy-init: step upload FAILED: 404 no profile matched"),
            Some(Marker::StepFailed(
                "upload".into(),
                "404 no profile matched".into()
            ))
        );
        assert_eq!(
            parse_line("edeploy-init: installed in 14022 ms"),
            Some(Marker::Installed(14022))
        );
        assert_eq!(parse_line("edeploy-init: step upload"), None);
        assert_eq!(parse_line("edeploy-init: step x ok (abc ms)"), None);
        assert_eq!(parse_line("random kernel line"), None);
    }

    #[test]
    fn role_markers() {
        assert_eq!(
            parse_line("edeploy-role: booted vm-52-54-00-12-34-56"),
            Some(Marker::RoleBooted("vm-52-54-00-12-34-56".into()))
        );
        assert_eq!(
            parse_line("edeploy-role: boot report sent\r"),
            Some(Marker::ReportSent)
        );
        assert_eq!(
            parse_line("edeploy-role: boot report FAILED"),
            Some(Marker::ReportFailed)
        );
    }

    #[test]
    fn timeline_queries() {
        let mut t = Timeline::default();
        for (i, l) in [
            "edeploy-init: step boot ok (12 ms)",
            "edeploy-init: step upload FAILED: 404 x",
            "edeploy-init: step network ok (900 ms)",
        ]
        .iter()
        .enumerate()
        {
            t.push(Duration::from_secs(i as u64), parse_line(l).unwrap());
        }
        assert_eq!(t.steps(), vec![("boot", 12), ("network", 900)]);
        assert_eq!(t.failed(), Some(("upload", "404 x")));
        assert_eq!(
            t.find(|m| matches!(m, Marker::StepOk(s, _) if s == "network"))
                .map(|x| x.0),
            Some(Duration::from_secs(2))
        );
    }
}
