//! edeploy's `/init` as a library: one module per step of DESIGN §1, each taking a root path
//! instead of touching `/`, so the whole sequence is testable on temp dirs. `main.rs` is the
//! PID 1 wiring (mounts, markers, final action).

pub mod cmdline;
pub mod configure;
pub mod finish;
pub mod grub;
pub mod install;
pub mod modules;
pub mod net;
pub mod steps;
pub mod sys;
pub mod upload;
