//! `GET /metrics`: Prometheus text exposition of the server's counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Distinct `event` labels of `edeploy_reports_total`.
pub const MAX_REPORT_EVENTS: usize = 32;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Inner {
    uploads: u64,
    matches: BTreeMap<String, u64>,
    failures: BTreeMap<&'static str, u64>,
    failure_reports: BTreeMap<String, u64>,
    log_uploads: u64,
    health_uploads: u64,
    tree_requests: BTreeMap<u16, u64>,
    reports: BTreeMap<String, u64>,
    buckets: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
}

/// The counters. One mutex: a request touches it twice, far less than its file work.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
    }

    pub fn upload(&self) {
        self.with(|m| m.uploads += 1);
    }

    pub fn matched(&self, profile: &str) {
        self.with(|m| *m.matches.entry(profile.to_string()).or_default() += 1);
    }

    pub fn failure(&self, reason: &'static str) {
        self.with(|m| *m.failures.entry(reason).or_default() += 1);
    }

    pub fn failure_report(&self, profile: &str) {
        self.with(|m| *m.failure_reports.entry(profile.to_string()).or_default() += 1);
    }

    pub fn log_upload(&self) {
        self.with(|m| m.log_uploads += 1);
    }

    pub fn health_upload(&self) {
        self.with(|m| m.health_uploads += 1);
    }

    /// A tree route answered with `status`.
    pub fn tree_request(&self, status: u16) {
        self.with(|m| *m.tree_requests.entry(status).or_default() += 1);
    }

    /// A boot report; events beyond the first [`MAX_REPORT_EVENTS`] kinds count as `other`, so
    /// made-up event names cannot grow the label set without bound.
    pub fn report(&self, event: &str) {
        self.with(|m| {
            let key = if m.reports.contains_key(event) || m.reports.len() < MAX_REPORT_EVENTS {
                event.to_string()
            } else {
                "other".to_string()
            };
            *m.reports.entry(key).or_default() += 1;
        });
    }

    pub fn latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        self.with(|m| {
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    m.buckets[i] += 1;
                }
            }
            m.latency_count += 1;
            m.latency_sum += s;
        });
    }

    /// Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = String::new();
        let label = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(o, "# HELP edeploy_uploads_total Upload requests received (hardware, failure reports, logs).\n# TYPE edeploy_uploads_total counter\nedeploy_uploads_total {}", m.uploads);
        let _ = writeln!(o, "# HELP edeploy_matches_total Machines given a profile.\n# TYPE edeploy_matches_total counter");
        for (p, n) in &m.matches {
            let _ = writeln!(o, "edeploy_matches_total{{profile=\"{}\"}} {n}", label(p));
        }
        let _ = writeln!(o, "# HELP edeploy_failures_total Refused or failed requests by reason.\n# TYPE edeploy_failures_total counter");
        for (r, n) in &m.failures {
            let _ = writeln!(o, "edeploy_failures_total{{reason=\"{r}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP edeploy_failure_reports_total Installation failures reported by machines.\n# TYPE edeploy_failure_reports_total counter");
        for (p, n) in &m.failure_reports {
            let _ = writeln!(
                o,
                "edeploy_failure_reports_total{{profile=\"{}\"}} {n}",
                label(p)
            );
        }
        let _ = writeln!(o, "# HELP edeploy_log_uploads_total Installation logs received.\n# TYPE edeploy_log_uploads_total counter\nedeploy_log_uploads_total {}", m.log_uploads);
        let _ = writeln!(o, "# HELP edeploy_health_uploads_total Health-check uploads received.\n# TYPE edeploy_health_uploads_total counter\nedeploy_health_uploads_total {}", m.health_uploads);
        let _ = writeln!(o, "# HELP edeploy_tree_requests_total Tree and metadata requests by status.\n# TYPE edeploy_tree_requests_total counter");
        for (st, n) in &m.tree_requests {
            let _ = writeln!(o, "edeploy_tree_requests_total{{status=\"{st}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP edeploy_reports_total Boot reports by event.\n# TYPE edeploy_reports_total counter");
        for (e, n) in &m.reports {
            let _ = writeln!(o, "edeploy_reports_total{{event=\"{}\"}} {n}", label(e));
        }
        let _ = writeln!(o, "# HELP edeploy_request_duration_seconds Time to answer an upload.\n# TYPE edeploy_request_duration_seconds histogram");
        for (b, n) in BUCKETS.iter().zip(m.buckets) {
            let _ = writeln!(
                o,
                "edeploy_request_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "edeploy_request_duration_seconds_bucket{{le=\"+Inf\"}} {c}\nedeploy_request_duration_seconds_sum {}\nedeploy_request_duration_seconds_count {c}",
            m.latency_sum,
            c = m.latency_count
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.upload();
        m.matched("vm");
        m.matched("vm");
        m.failure("no_match");
        m.latency(Duration::from_micros(1500));
        let t = m.render();
        assert!(t.contains("edeploy_uploads_total 1\n"));
        assert!(t.contains("edeploy_matches_total{profile=\"vm\"} 2\n"));
        assert!(t.contains("edeploy_failures_total{reason=\"no_match\"} 1\n"));
        assert!(t.contains("edeploy_request_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(t.contains("edeploy_request_duration_seconds_bucket{le=\"0.002\"} 1\n"));
        assert!(t.contains("edeploy_request_duration_seconds_count 1\n"));
    }
}
