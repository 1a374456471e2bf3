//! The deployment agent (DESIGN §7): keeps a host's applications in line with a ZooKeeper tree,
//! as zc.zkdeployment 1.0 did.
//!
//! - [`tree`]: the tree as data; [`treefmt`]: zc.zk's text format and import;
//! - [`plan`]: desired deployments for one host and the ordered steps to reach them (pure);
//! - [`backend`]: package manager command lines; [`exec`]: running and logging commands;
//! - [`store`]: where the tree lives (ZooKeeper, or a text file for one machine);
//! - [`run`]: the agent and one deploy run; [`rundir`]: its own files; [`check`]: the Nagios check.

pub mod backend;
pub mod check;
pub mod exec;
pub mod plan;
pub mod run;
pub mod rundir;
pub mod store;
pub mod testkit;
pub mod tree;
pub mod treefmt;
pub mod vcs;
