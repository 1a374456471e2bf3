//! `edeploy agent check`: a Nagios-style verdict on this host's deployments. Lag is measured from
//! the moment the host first fell out of sync (recorded once in the run directory), not from the
//! last status write, whose clock restarted with every attempt in the original check.

use crate::rundir::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Level {
    /// Nagios plugin exit codes.
    pub fn code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

/// What the check saw; `since` is when the host first lagged, if it lags.
pub struct Observed<'a> {
    pub now: u64,
    pub cluster: Option<&'a str>,
    pub host: Option<&'a str>,
    pub status: Option<&'a Status>,
    pub since: Option<u64>,
    pub max_lag_secs: u64,
}

pub fn evaluate(o: &Observed) -> (Level, String) {
    let v = |x: Option<&str>| x.unwrap_or("None").to_string();
    if let Some(s) = o.status.filter(|s| s.status == "failed") {
        return (
            Level::Critical,
            format!("FAILED deploying version {}", v(s.version.as_deref())),
        );
    }
    match o.cluster {
        None => (
            Level::Ok,
            format!("cluster version is None; host at {}", v(o.host)),
        ),
        Some(c) if Some(c) == o.host => (Level::Ok, format!("in sync at version {c}")),
        Some(c) => {
            let lag = o.since.map_or(0, |s| o.now.saturating_sub(s));
            let msg = format!(
                "host at version {}, cluster at {c}, out of sync for {} min",
                v(o.host),
                lag / 60
            );
            if lag > o.max_lag_secs {
                (Level::Critical, msg)
            } else {
                (Level::Warning, msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs<'a>(
        cluster: Option<&'a str>,
        host: Option<&'a str>,
        since: Option<u64>,
    ) -> Observed<'a> {
        Observed {
            now: 10_000,
            cluster,
            host,
            status: None,
            since,
            max_lag_secs: 900,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            evaluate(&obs(Some("2"), Some("2"), None)),
            (Level::Ok, "in sync at version 2".into())
        );
        assert_eq!(
            evaluate(&obs(Some("2"), Some("1"), Some(10_000 - 899))),
            (
                Level::Warning,
                "host at version 1, cluster at 2, out of sync for 14 min".into()
            )
        );
        assert_eq!(
            evaluate(&obs(Some("2"), None, Some(10_000 - 901))).0,
            Level::Critical
        );
        assert_eq!(evaluate(&obs(None, Some("1"), None)).0, Level::Ok);
        let failed = Status {
            time: 1,
            pid: 2,
            version: Some("3".into()),
            status: "failed".into(),
        };
        let mut o = obs(None, Some("2"), None);
        o.status = Some(&failed);
        assert_eq!(
            evaluate(&o),
            (Level::Critical, "FAILED deploying version 3".into())
        );
        assert_eq!(
            (Level::Critical.code(), Level::Unknown.name()),
            (2, "UNKNOWN")
        );
    }
}
