//! The CGI front end (RFC 3875): one request from the environment and stdin, the response on
//! stdout. The binary can be dropped into `cgi-bin/` as `upload.py` (or `upload-health.py`,
//! `report.py`). Trees are not served under CGI: point the web server's static file serving
//! at STOREDIR under `/trees/` (see docs/server.md).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::pipeline::{Request, Response, Server, UploadError};

/// Where edeploy.conf is read from under CGI (eDeploy read /etc/edeploy.conf).
pub const CONF_ENV: &str = "EDEPLOY_CONF";
pub const DEFAULT_CONF: &str = "/etc/edeploy.conf";
/// Overrides the request size cap (bytes) under CGI.
pub const MAX_UPLOAD_ENV: &str = "EDEPLOY_MAX_UPLOAD";

/// The route of the request: the script's own name decides, so that one binary copied as
/// `upload.py` and `upload-health.py` serves both.
fn route(script_name: &str) -> &'static str {
    let base = script_name.rsplit('/').next().unwrap_or("");
    if base.contains("health") {
        "/upload-health"
    } else if base.contains("report") {
        "/report"
    } else {
        "/upload"
    }
}

/// Handles the request described by `env` (a lookup) and `stdin`; returns the CGI output.
pub fn handle(
    server: &Server,
    env: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Vec<u8> {
    let method = env("REQUEST_METHOD").unwrap_or_else(|| "GET".into());
    let content_type = env("CONTENT_TYPE").unwrap_or_default();
    let len = env("CONTENT_LENGTH")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let path = route(&env("SCRIPT_NAME").unwrap_or_default());
    let response = if len > server.max_upload {
        server.metrics.failure("too_large");
        UploadError::TooLarge(len, server.max_upload).to_response()
    } else {
        let mut body = Vec::with_capacity(len);
        match stdin.take(len as u64).read_to_end(&mut body) {
            Ok(n) if n == len => server.handle(
                Request {
                    method: &method,
                    path,
                    content_type: &content_type,
                    body: &body,
                },
                false,
            ),
            Ok(n) => {
                UploadError::BadRequest(format!("body of {n} bytes, {len} announced")).to_response()
            }
            Err(e) => UploadError::Internal(format!("reading the body: {e}")).to_response(),
        }
    };
    render(&response)
}

fn render(r: &Response) -> Vec<u8> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "Status: {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if let Some(why) = &r.reason {
        out.push_str(&format!("X-Edeploy-Error: {why}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&r.body);
    out
}

/// The CGI entry point: handles one request and writes the answer to stdout.
pub fn run() -> io::Result<()> {
    let conf =
        std::env::var_os(CONF_ENV).map_or_else(|| PathBuf::from(DEFAULT_CONF), PathBuf::from);
    let mut server = Server::new(conf);
    if let Some(n) = std::env::var(MAX_UPLOAD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        server.max_upload = n;
    }
    let out = handle(&server, |k| std::env::var(k).ok(), &mut io::stdin().lock());
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::multipart::encode;

    fn run(server: &Server, env: &[(&str, &str)], body: &[u8]) -> String {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let out = handle(
            server,
            |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            &mut &body[..],
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_request_from_env_and_stdin() {
        let d = tempfile::tempdir().unwrap();
        let s = Server::new(fixture::scenario_config(d.path()).unwrap());
        let hw = fixture::hw_json("vm", "52:54:00:00:00:01");
        let body = encode("B", &[("file", Some("hw.json"), hw.as_bytes())]);
        let len = body.len().to_string();
        let env = [
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", "/cgi-bin/upload.py"),
            ("CONTENT_TYPE", "multipart/form-data; boundary=B"),
            ("CONTENT_LENGTH", len.as_str()),
        ];
        let out = run(&s, &env, &body);
        assert!(out.starts_with("Status: 200 OK\r\nContent-Type: text/x-shellscript\r\n"));
        assert!(
            out.contains("\r\n\r\n#!/bin/sh\n# EDEPLOY_PROFILE=vm\n"),
            "{out}"
        );
        // A body shorter than announced is refused.
        let out = run(&s, &env, &body[..body.len() - 1]);
        assert!(out.starts_with("Status: 400 Bad Request\r\n"), "{out}");
        // Too large: refused from CONTENT_LENGTH alone.
        let big = (s.max_upload + 1).to_string();
        let mut env2 = env;
        env2[3] = ("CONTENT_LENGTH", big.as_str());
        let out = run(&s, &env2, b"");
        assert!(
            out.starts_with("Status: 413 Payload Too Large\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nX-Edeploy-Error: upload of "), "{out}");
    }

    #[test]
    fn route_follows_the_script_name() {
        assert_eq!(route("/cgi-bin/upload.py"), "/upload");
        assert_eq!(route("/cgi-bin/upload-health.py"), "/upload-health");
        assert_eq!(route(""), "/upload");
        assert_eq!(route("/cgi-bin/report.py"), "/report");
    }
}
