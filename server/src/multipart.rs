//! `multipart/form-data` (RFC 7578) as curl and eDeploy's initrds send it. Written here rather
//! than taken from a crate because both front ends (embedded HTTP and CGI) hand us the whole body
//! already size-capped, and a small parser over a byte slice is easy to fuzz.

/// One form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    /// The `filename` parameter, when the field is a file.
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("expected a multipart/form-data upload, got content type `{0}`")]
    NotMultipart(String),
    #[error("multipart upload without a boundary")]
    NoBoundary,
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    #[error("too many multipart fields (more than {0})")]
    TooManyParts(usize),
}

/// More fields than any client sends: a bound on the work a hostile body can cause.
pub const MAX_PARTS: usize = 64;
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::NotMultipart(
            content_type.chars().take(80).collect(),
        ));
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            // RFC 2046: 1 to 70 characters.
            if v.is_empty() || v.len() > 70 {
                return Err(MultipartError::NoBoundary);
            }
            return Ok(v.to_string());
        }
    }
    Err(MultipartError::NoBoundary)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    // The boundary starts with CR LF `--`: scanning for the first byte keeps this linear in
    // practice without pulling in a substring-search crate.
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Parses a whole multipart body.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, MultipartError> {
    let b = boundary(content_type)?;
    parse_with_boundary(&b, body)
}

pub fn parse_with_boundary(boundary: &str, body: &[u8]) -> Result<Vec<Part>, MultipartError> {
    let delim = format!("\r\n--{boundary}").into_bytes();
    // The first delimiter may come without the leading CR LF (and usually does).
    let mut pos = if body.starts_with(&delim[2..]) {
        delim.len() - 2
    } else {
        find(body, &delim).ok_or(MultipartError::Malformed("no boundary in the body"))?
            + delim.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts); // the closing delimiter; an epilogue is ignored
        }
        // Transport padding (spaces) then CR LF ends the delimiter line.
        let line_end = find(rest, b"\r\n").ok_or(MultipartError::Malformed("truncated body"))?;
        if rest[..line_end].iter().any(|&c| c != b' ' && c != b'\t') {
            return Err(MultipartError::Malformed("garbage after a boundary"));
        }
        let start = pos + line_end + 2;
        let rest = &body[start..];
        let (headers, data_start) = match rest.strip_prefix(b"\r\n") {
            Some(_) => (&rest[..0], 2),
            None => {
                let end = find(rest, b"\r\n\r\n")
                    .ok_or(MultipartError::Malformed("part headers never end"))?;
                (&rest[..end], end + 4)
            }
        };
        if headers.len() > MAX_HEADER_BYTES {
            return Err(MultipartError::Malformed("part headers too long"));
        }
        let data_rest = &rest[data_start..];
        let end = find(data_rest, &delim).ok_or(MultipartError::Malformed("unterminated part"))?;
        let (name, filename) = disposition(headers)?;
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::TooManyParts(MAX_PARTS));
        }
        parts.push(Part {
            name,
            filename,
            data: data_rest[..end].to_vec(),
        });
        pos = start + data_start + end + delim.len();
    }
}

/// `name` and `filename` of the part's Content-Disposition header.
fn disposition(headers: &[u8]) -> Result<(String, Option<String>), MultipartError> {
    let text = std::str::from_utf8(headers)
        .map_err(|_| MultipartError::Malformed("part headers are not UTF-8"))?;
    for line in text.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else {
            return Err(MultipartError::Malformed("part header without `:`"));
        };
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut items = split_params(v);
        let kind = items.next().unwrap_or_default();
        if !kind.trim().eq_ignore_ascii_case("form-data") {
            return Err(MultipartError::Malformed("part is not form-data"));
        }
        let (mut name, mut filename) = (None, None);
        for item in items {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let v = unquote(v.trim());
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(v),
                "filename" => filename = Some(v),
                _ => {}
            }
        }
        let name = name.ok_or(MultipartError::Malformed("part without a name"))?;
        return Ok((name, filename));
    }
    Err(MultipartError::Malformed(
        "part without Content-Disposition",
    ))
}

/// Splits `form-data; name="a;b"; filename="x"` on the semicolons outside quotes.
fn split_params(v: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in v.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                cur.push(c);
                quoted = !quoted;
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// Builds a multipart body (tests, the load generator, the fuzz target's seed).
pub fn encode(boundary: &str, fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in fields {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=------------------------abc123";

    #[test]
    fn parses_what_curl_sends() {
        let body = b"--------------------------abc123\r\n\
            Content-Disposition: form-data; name=\"section\"\r\n\r\n\
            SERVER\r\n\
            --------------------------abc123\r\n\
            Content-Disposition: form-data; name=\"file\"; filename=\"hw.json\"\r\n\
            Content-Type: application/octet-stream\r\n\r\n\
            [[\"a\",\"b\",\"c\",\"d\"]]\n\r\n\
            --------------------------abc123--\r\n";
        let parts = parse(CT, body).unwrap();
        assert_eq!(
            parts,
            vec![
                Part {
                    name: "section".into(),
                    filename: None,
                    data: b"SERVER".to_vec()
                },
                Part {
                    name: "file".into(),
                    filename: Some("hw.json".into()),
                    data: b"[[\"a\",\"b\",\"c\",\"d\"]]\n".to_vec()
                },
            ]
        );
    }

    #[test]
    fn encode_round_trips_and_quoted_params() {
        let body = encode(
            "XyZ",
            &[("a", None, b"1"), ("f", Some("x;y.json"), b"\r\n--X")],
        );
        let parts = parse("multipart/form-data; boundary=\"XyZ\"", &body).unwrap();
        assert_eq!(parts[0].data, b"1");
        assert_eq!(parts[1].filename.as_deref(), Some("x;y.json"));
        assert_eq!(parts[1].data, b"\r\n--X");
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert!(matches!(
            parse("application/json", b"{}"),
            Err(MultipartError::NotMultipart(_))
        ));
        assert_eq!(
            parse("multipart/form-data", b""),
            Err(MultipartError::NoBoundary)
        );
        let ct = "multipart/form-data; boundary=B";
        assert!(parse(ct, b"").is_err());
        assert!(parse(
            ct,
            b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx"
        )
        .is_err());
        assert!(parse(ct, b"--B\r\nX: y\r\n\r\nx\r\n--B--").is_err());
        assert!(parse(ct, b"--Bjunk\r\n\r\nx\r\n--B--").is_err());
        let many: Vec<(&str, Option<&str>, &[u8])> = vec![("a", None, b""); MAX_PARTS + 1];
        assert_eq!(
            parse(ct, &encode("B", &many)),
            Err(MultipartError::TooManyParts(MAX_PARTS))
        );
    }
}
