//! Where the tree lives: ZooKeeper for a cluster, a text file for one machine. The agent only
//! sees this trait, so a deploy run is the same code over either.

use std::time::Duration;

use thiserror::Error;

use crate::tree::{Node, Props};
use crate::treefmt::{Change, FormatError};

pub mod file;
pub mod zk;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("another agent is running: {0} is registered")]
    AlreadyRunning(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format { path: String, source: FormatError },
    #[error("ZooKeeper: {0}")]
    Zk(String),
    #[error("no node {0}")]
    NoNode(String),
}

pub trait Store {
    /// The whole tree, ephemeral nodes flagged.
    fn load(&mut self) -> Result<Node, StoreError>;

    /// The properties of one node (`None` when it does not exist).
    fn props(&mut self, path: &str) -> Result<Option<Props>, StoreError>;

    /// Creates this agent's `/hosts/<id>`, ephemeral where the store has sessions; fails with
    /// [`StoreError::AlreadyRunning`] when another live agent holds it.
    fn register(&mut self, id: &str, props: &Props) -> Result<(), StoreError>;

    /// Read-modify-write of one node's properties (the host node's `version` and `error`, the
    /// `/hosts` all-stop).
    fn update(&mut self, path: &str, edit: &mut dyn FnMut(&mut Props)) -> Result<(), StoreError>;

    /// Applies an import.
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError>;

    /// Serialises deploy scripts of one application across hosts.
    fn lock(&mut self, app: &str) -> Result<(), StoreError>;
    fn unlock(&mut self, app: &str) -> Result<(), StoreError>;

    /// Blocks until `/hosts` may have changed (`true`) or `timeout` passed (`false`). Spurious
    /// wake-ups are allowed: a run with nothing to do is cheap.
    fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError>;
}

/// So the binary can pick a store at run time.
impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self) -> Result<Node, StoreError> {
        (**self).load()
    }
    fn props(&mut self, path: &str) -> Result<Option<Props>, StoreError> {
        (**self).props(path)
    }
    fn register(&mut self, id: &str, props: &Props) -> Result<(), StoreError> {
        (**self).register(id, props)
    }
    fn update(&mut self, path: &str, edit: &mut dyn FnMut(&mut Props)) -> Result<(), StoreError> {
        (**self).update(path, edit)
    }
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        (**self).apply(changes)
    }
    fn lock(&mut self, app: &str) -> Result<(), StoreError> {
        (**self).lock(app)
    }
    fn unlock(&mut self, app: &str) -> Result<(), StoreError> {
        (**self).unlock(app)
    }
    fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        (**self).wait(timeout)
    }
}
