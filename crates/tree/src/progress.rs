//! Progress events. The library only emits them; the CLI renders them (indicatif bar on a TTY,
//! JSON lines with `--json`, nothing otherwise).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// What will be transferred (payload bytes after decompression) and how many files.
    Start {
        files: u64,
        bytes: u64,
        skipped: u64,
    },
    /// Payload bytes written so far (cumulative).
    Bytes {
        done: u64,
    },
    /// A file was verified and committed.
    File {
        path: String,
    },
    Phase {
        name: String,
    },
    Done {
        files: u64,
        bytes: u64,
    },
}

pub trait Progress: Sync {
    fn event(&self, e: Event);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: Event) {}
}
