//! edeploy-server's library: the upload pipeline shared by the embedded HTTP server and the CGI
//! front end, and the pieces it is made of (kept apart so they can be unit-tested and fuzzed).

pub mod cgi;
#[doc(hidden)]
pub mod fixture;
#[cfg(feature = "serve")]
pub mod http;
pub mod metrics;
pub mod multipart;
pub mod nodes;
pub mod pipeline;
pub mod report;
pub mod script;
pub mod store;
pub mod trees;

pub use pipeline::{Request, Response, Server, UploadError};
