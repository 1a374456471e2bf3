//! Role trees (DESIGN §3 Trees, Host state): a tree is indexed into a [`Manifest`]; file
//! contents live as content-addressed blobs in a [`store::Store`] and travel in a *pack*;
//! hosts [`install`] a tree fresh, [`verify`] a live tree against its manifest, and
//! [`upgrade`] between versions through a journal that makes rollback exact.
//! Everything reaches the server through the [`source::Source`] trait: a local store
//! directory ([`source::LocalSource`]) or the server's HTTP routes ([`http::HttpSource`]).
//!
//! Format details: docs/tree.md.

pub mod byteranges;
pub mod delta;
pub mod exclude;
pub mod fsutil;
pub mod http;
pub mod image;
pub mod index;
pub mod install;
pub mod manifest;
pub mod pathenc;
pub mod progress;
pub mod source;
pub mod state;
pub mod store;
pub mod stream;
pub mod upgrade;
pub mod verify;

pub use manifest::{Entry, Hash, Kind, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("manifest format: {0}")]
    Format(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("signature: {0}")]
    Signature(String),
    #[error("integrity: {0}")]
    Integrity(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;
