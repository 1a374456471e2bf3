//! The provisioning brain of edeploy, in eDeploy's file formats.
//!
//! - [`specs`]: a profile's `*.specs` (literal list of 4-tuples) compiled into [`Specs`];
//! - [`matcher`]: the search that assigns hardware lines to spec lines and binds variables;
//! - [`explain`]: why a machine did or did not match, line by line;
//! - [`generate`]: eDeploy's `generate({...})` range expansion for CMDB files;
//! - [`cmdb`], [`state`]: entry selection and quota bookkeeping;
//! - [`conf`]: the `edeploy.conf` INI reader;
//! - [`config`]: a whole config directory: loading, checking, and selecting a profile.
//!
//! Everything here is pure over parsed values except the `load_*` functions and [`config`],
//! which read files but never write them: persisting is the caller's job (`edeploy-fsutil`).

pub mod cmdb;
pub mod conf;
pub mod config;
pub mod element;
pub mod explain;
pub mod generate;
pub mod matcher;
pub mod specs;
pub mod state;

pub use matcher::{match_specs, Match};
pub use specs::{SpecError, Specs};
