//! The hardware list a machine reports: `[category, item, key, value]` lines, all strings.
//!
//! It travels as JSON (`[["disk","vda","size","10"], ...]`) and is stored in eDeploy's `.hw`
//! Python-literal form (`[('disk', 'vda', 'size', '10'), ...]`); both parse here. eDeploy's own
//! detector sometimes emitted ints: they are read as their decimal text.

mod list;
mod sysname;

pub use list::{HardwareList, HwError, HwLine};
pub use sysname::sysname;

pub mod detect;
pub use detect::{detect, DetectError};
