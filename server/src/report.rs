//! `POST /report`: the installed system's first boot (or any later milestone) says how it went.
//! Body `application/x-www-form-urlencoded`: `sysname` (required, the upload's name check),
//! `event` (required, a short token such as `booted`), `detail` (optional, bounded). Recorded
//! in the node time line (`GET /nodes`) and counted in `/metrics`. Works under CGI too (a
//! `cgi-bin/report.py` copy of the binary), through the same `Server::handle`.

use crate::pipeline::{check_name, UploadError};
use crate::trees::percent_decode;

/// Longest `event` token.
pub const MAX_EVENT: usize = 32;
/// Longest `detail` text, bytes.
pub const MAX_DETAIL: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub sysname: String,
    pub event: String,
    pub detail: Option<String>,
}

fn bad(msg: impl Into<String>) -> UploadError {
    UploadError::BadRequest(msg.into())
}

/// Decodes an urlencoded form: `k=v&k2=v2`, `+` is a space, `%XX` escapes.
pub fn parse_urlencoded(body: &[u8]) -> Result<Vec<(String, String)>, UploadError> {
    let text = std::str::from_utf8(body).map_err(|_| bad("form body is not UTF-8"))?;
    let mut out = Vec::new();
    for pair in text.trim_end_matches(['\r', '\n']).split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| -> Result<String, UploadError> {
            let b = percent_decode(s.replace('+', " ").as_bytes())
                .ok_or_else(|| bad("malformed %-escape in the form"))?;
            String::from_utf8(b).map_err(|_| bad("form field is not UTF-8"))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

/// Parses and validates a report request.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Report, UploadError> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(bad(format!(
            "expected application/x-www-form-urlencoded, got {mime:?}"
        )));
    }
    let (mut sysname, mut event, mut detail) = (None, None, None);
    for (k, v) in parse_urlencoded(body)? {
        let slot = match k.as_str() {
            "sysname" => &mut sysname,
            "event" => &mut event,
            "detail" => &mut detail,
            _ => continue, // as the upload: unknown fields are ignored
        };
        if slot.replace(v).is_some() {
            return Err(bad(format!("field `{k}` given twice")));
        }
    }
    let sysname = sysname.ok_or_else(|| bad("no `sysname` field"))?;
    check_name("sysname", &sysname)?;
    let event = event.ok_or_else(|| bad("no `event` field"))?;
    if event.is_empty()
        || event.len() > MAX_EVENT
        || !event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(bad(format!(
            "invalid event {:?} (1 to {MAX_EVENT} of A-Z a-z 0-9 _ - .)",
            event.chars().take(MAX_EVENT + 1).collect::<String>()
        )));
    }
    if let Some(d) = &detail {
        if d.len() > MAX_DETAIL {
            return Err(bad(format!(
                "detail of {} bytes is longer than {MAX_DETAIL}",
                d.len()
            )));
        }
    }
    // Control characters would break the one-line time line entries: made spaces.
    let detail = detail
        .map(|d| d.replace(|c: char| c.is_control(), " "))
        .filter(|d| !d.trim().is_empty());
    Ok(Report {
        sysname,
        event,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "application/x-www-form-urlencoded";

    #[test]
    fn parses_a_report() {
        let r = parse(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"sysname=vm-52-54-00-00-00-01&event=booted&detail=up+in%2012s&x=y\n",
        )
        .unwrap();
        assert_eq!(r.sysname, "vm-52-54-00-00-00-01");
        assert_eq!(r.event, "booted");
        assert_eq!(r.detail.as_deref(), Some("up in 12s"));
        let r = parse(CT, b"event=booted&sysname=a&detail=").unwrap();
        assert_eq!(r.detail, None);
        let r = parse(CT, b"event=booted&sysname=a&detail=a%0Ab").unwrap();
        assert_eq!(r.detail.as_deref(), Some("a b"));
    }

    #[test]
    fn refuses_bad_reports() {
        let long = format!(
            "sysname=a&event=booted&detail={}",
            "x".repeat(MAX_DETAIL + 1)
        );
        for (ct, body) in [
            (
                "multipart/form-data; boundary=x",
                &b"sysname=a&event=booted"[..],
            ),
            (CT, b"event=booted"),
            (CT, b"sysname=a"),
            (CT, b"sysname=..&event=booted"),
            (CT, b"sysname=a%2Fb&event=booted"),
            (CT, b"sysname=a%00&event=booted"),
            (CT, b"sysname=a&event=boot+ed"),
            (CT, b"sysname=a&event="),
            (CT, b"sysname=a&event=booted&event=failed"),
            (CT, b"sysname=a&event=booted&detail=%zz"),
            (CT, b"sysname=a&event=\xff"),
            (CT, long.as_bytes()),
        ] {
            let e = parse(ct, body).unwrap_err();
            assert_eq!(e.status(), 400, "{body:?}");
        }
    }
}
