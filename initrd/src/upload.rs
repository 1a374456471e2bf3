//! Talking to the provisioning server (DESIGN §4): the hardware upload that returns the
//! configure script, the failure report, and the log upload. All three are the same multipart
//! POST to `http://SERV:HTTP_PORT{HTTP_PATH}upload.py`, as eDeploy's `curl -F` did.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::Client;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The server answered and refused: its one-line reason.
    #[error("server refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("cannot reach {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{0}")]
    Other(String),
}

/// Retry policy: transport errors and 5xx are retried (a server restarting, a switch port still
/// converging) until `total` has passed; a 4xx is the server's answer and is final.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub total: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Per-request timeout (the server may run pxemngr while we wait).
    pub request: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            total: Duration::from_secs(120),
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// One multipart field: `(name, value, filename)`.
pub struct Field<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
    pub filename: Option<&'a str>,
}

impl<'a> Field<'a> {
    /// A plain form field.
    pub fn text(name: &'a str, value: &'a str) -> Field<'a> {
        Field {
            name,
            value: value.as_bytes(),
            filename: None,
        }
    }

    /// A file part.
    pub fn file(name: &'a str, filename: &'a str, value: &'a [u8]) -> Field<'a> {
        Field {
            name,
            value,
            filename: Some(filename),
        }
    }
}

fn form(fields: &[Field]) -> Form {
    let mut f = Form::new();
    for x in fields {
        match x.filename {
            Some(n) => {
                f = f.part(
                    x.name.to_string(),
                    Part::bytes(x.value.to_vec()).file_name(n.to_string()),
                )
            }
            None => {
                f = f.text(
                    x.name.to_string(),
                    String::from_utf8_lossy(x.value).into_owned(),
                )
            }
        }
    }
    f
}

/// The one-line reason of a refusal: `X-Edeploy-Error`, else the body's first non-empty line.
pub fn reason(header: Option<&str>, body: &str) -> String {
    if let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("#!"));
    line.unwrap_or("(empty body)").chars().take(300).collect()
}

/// POSTs `fields` to `url` with retries; the 2xx body.
pub fn post(
    url: &str,
    fields: &[Field],
    retry: Retry,
    log: &dyn Fn(&str),
) -> Result<String, UploadError> {
    let client = Client::builder()
        .timeout(retry.request)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| UploadError::Other(format!("HTTP client: {e}")))?;
    let start = Instant::now();
    let mut delay = retry.first_delay;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match client.post(url).multipart(form(fields)).send() {
            Ok(resp) => {
                let status = resp.status();
                let header = resp
                    .headers()
                    .get("x-edeploy-error")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string);
                let body = resp.text().unwrap_or_default();
                if status.is_success() {
                    return Ok(body);
                }
                let e = UploadError::Refused {
                    status: status.as_u16(),
                    reason: reason(header.as_deref(), &body),
                };
                if !status.is_server_error() {
                    return Err(e);
                }
                e
            }
            Err(e) => UploadError::Unreachable {
                url: url.to_string(),
                why: error_chain(&e),
            },
        };
        if start.elapsed() + delay > retry.total {
            return Err(err);
        }
        log(&format!("attempt {attempt}: {err}; retrying in {delay:?}"));
        std::thread::sleep(delay);
        delay = (delay * 2).min(retry.max_delay);
    }
}

/// reqwest's Display stops at "error sending request": the cause (connection refused, …) is
/// what an operator needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The hardware upload: returns the configure script.
pub fn upload_hw(
    url: &str,
    section: &str,
    hw_json: &str,
    retry: Retry,
    log: &dyn Fn(&str),
) -> Result<String, UploadError> {
    post_hw(url, section, None, hw_json, retry, log)
}

/// The failure report: the hardware again, plus `failure=<profile>` so the server gives the
/// profile's quota unit back.
pub fn report_failure(
    url: &str,
    section: &str,
    profile: &str,
    hw_json: &str,
    retry: Retry,
    log: &dyn Fn(&str),
) -> Result<String, UploadError> {
    post_hw(url, section, Some(profile), hw_json, retry, log)
}

fn post_hw(
    url: &str,
    section: &str,
    failure: Option<&str>,
    hw_json: &str,
    retry: Retry,
    log: &dyn Fn(&str),
) -> Result<String, UploadError> {
    let mut fields = vec![Field::text("section", section)];
    fields.extend(failure.map(|p| Field::text("failure", p)));
    fields.push(Field::file("file", "hw.json", hw_json.as_bytes()));
    post(url, &fields, retry, log)
}

/// gzip of `data` (pure Rust deflate).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// The log upload: `file` named `<sysname>.log.gz` (the server saves it into LOGDIR).
pub fn upload_log(
    url: &str,
    section: &str,
    sysname: &str,
    log_bytes: &[u8],
    retry: Retry,
    log: &dyn Fn(&str),
) -> Result<String, UploadError> {
    let gz = gzip(log_bytes);
    let name = format!("{sysname}.log.gz");
    post(
        url,
        &[
            Field::text("section", section),
            Field::file("file", &name, &gz),
        ],
        retry,
        log,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn reasons() {
        assert_eq!(
            reason(Some("no profile matched"), "x"),
            "no profile matched"
        );
        assert_eq!(
            reason(None, "#!/bin/sh\necho 'edeploy: no match' >&2\nexit 1\n"),
            "echo 'edeploy: no match' >&2"
        );
        assert_eq!(reason(Some(" "), "\n\nboom\n"), "boom");
        assert_eq!(reason(None, ""), "(empty body)");
    }

    #[test]
    fn gzip_round_trip() {
        let gz = gzip(b"hello log\n");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello log\n");
    }

    #[test]
    fn unreachable_gives_up_after_the_total_timeout() {
        // A port nobody listens on (bound then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let retry = Retry {
            total: Duration::from_millis(300),
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
            request: Duration::from_secs(2),
        };
        let t = Instant::now();
        let n = std::cell::Cell::new(0);
        let e = upload_hw(
            &format!("http://127.0.0.1:{port}/cgi-bin/upload.py"),
            "SERVER",
            "[]",
            retry,
            &|_| n.set(n.get() + 1),
        )
        .unwrap_err();
        assert!(matches!(e, UploadError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&port.to_string()));
        assert!(n.get() >= 1);
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
