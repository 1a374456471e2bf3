//! `GET /nodes`: per machine (sysname), the time line of what the server saw. Kept in memory by
//! the embedded server (a CGI process lives for one request, so it has none); bounded so a flood
//! of made-up machines cannot grow it without limit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const MAX_NODES: usize = 100_000;
const MAX_EVENTS: usize = 64;

struct Event {
    time: f64,
    kind: &'static str,
    detail: String,
}

#[derive(Default)]
pub struct Nodes {
    inner: Mutex<BTreeMap<String, VecDeque<Event>>>,
}

impl Nodes {
    /// Records an event: `kind` is one of `upload`, `match`, `refused`, `failure`, `log`, `health`.
    pub fn record(&self, sysname: &str, kind: &'static str, detail: impl Into<String>) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !g.contains_key(sysname) && g.len() >= MAX_NODES {
            return;
        }
        let q = g.entry(sysname.to_string()).or_default();
        if q.len() == MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(Event {
            time,
            kind,
            detail: detail.into(),
        });
    }

    /// `{"<sysname>": [{"time": unix_seconds, "event": kind, "detail": text}, …], …}`
    pub fn to_json(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = serde_json::Map::new();
        for (name, events) in g.iter() {
            let list = events
                .iter()
                .map(|e| serde_json::json!({"time": e.time, "event": e.kind, "detail": e.detail}))
                .collect();
            out.insert(name.clone(), serde_json::Value::Array(list));
        }
        serde_json::Value::Object(out).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_line_is_bounded_and_ordered() {
        let n = Nodes::default();
        for i in 0..MAX_EVENTS + 3 {
            n.record("m1", "upload", format!("{i}"));
        }
        n.record("m2", "match", "vm");
        let j: serde_json::Value = serde_json::from_str(&n.to_json()).unwrap();
        let m1 = j["m1"].as_array().unwrap();
        assert_eq!(m1.len(), MAX_EVENTS);
        assert_eq!(m1[0]["detail"], "3");
        assert_eq!(j["m2"][0]["event"], "match");
    }
}
