//! `multipart/byteranges` (RFC 9110 §14.6): several ranges of one file in one response, so a
//! delta upgrade asks for its hundreds of missing ranges in a few requests. Every static web
//! server answers `Range: bytes=a-b,c-d` this way (and `edeploy-server serve` does); a server
//! may also coalesce the ranges or send the whole file, which [`pick`] accepts as well.

/// The `boundary` parameter of a `multipart/byteranges` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// The parts of a `multipart/byteranges` body: (offset of the part's first byte, its bytes).
/// Each part's length comes from its `Content-Range`, so binary data that happens to contain
/// the boundary cannot cut a part short.
pub fn parse(boundary: &str, body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut at = find(body, delim, 0).ok_or("no multipart boundary in the body")?;
    let mut parts = Vec::new();
    loop {
        at += delim.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        // Headers of this part, up to the empty line.
        let line_end = |from: usize| find(body, b"\r\n", from).ok_or("multipart part cut short");
        at = line_end(at)? + 2;
        let mut range = None;
        loop {
            let end = line_end(at)?;
            let line = &body[at..end];
            at = end + 2;
            if line.is_empty() {
                break;
            }
            let line = std::str::from_utf8(line).map_err(|_| "non-text multipart header")?;
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-range") {
                    range = Some(content_range(v).ok_or_else(|| format!("bad part range {v:?}"))?);
                }
            }
        }
        let (start, end) = range.ok_or("multipart part without Content-Range")?;
        // Checked: the numbers come from the network.
        let short = "multipart part shorter than its Content-Range";
        let stop = usize::try_from(end - start)
            .ok()
            .and_then(|n| at.checked_add(n)?.checked_add(1))
            .ok_or(short)?;
        let data = body.get(at..stop).ok_or(short)?;
        parts.push((start, data.to_vec()));
        at = find(body, delim, stop).ok_or("multipart body without its closing boundary")?;
    }
}

/// `bytes FIRST-LAST/LEN` → (FIRST, LAST).
pub fn content_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v
        .trim()
        .strip_prefix("bytes ")?
        .split_once('/')?
        .0
        .split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// The bytes of every `wanted` range (`start..end`) out of whatever parts the server sent.
pub fn pick(wanted: &[(u64, u64)], parts: &[(u64, Vec<u8>)]) -> Result<Vec<Vec<u8>>, String> {
    wanted
        .iter()
        .map(|&(s, e)| {
            parts
                .iter()
                .find(|(ps, d)| *ps <= s && ps.saturating_add(d.len() as u64) >= e)
                .map(|(ps, d)| d[(s - ps) as usize..(e - ps) as usize].to_vec())
                .ok_or_else(|| format!("the response lacks bytes {s}-{}", e - 1))
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(b: &str, parts: &[(u64, &[u8])], len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (s, d) in parts {
            out.extend_from_slice(
                format!(
                    "\r\n--{b}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {s}-{}/{len}\r\n\r\n",
                    s + d.len() as u64 - 1
                )
                .as_bytes(),
            );
            out.extend_from_slice(d);
        }
        out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        out
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(boundary("multipart/byteranges; boundary=abc"), Some("abc"));
        assert_eq!(
            boundary("Multipart/ByteRanges;boundary=\"x y\""),
            Some("x y")
        );
        assert_eq!(boundary("multipart/byteranges; boundary="), None);
        assert_eq!(boundary("application/octet-stream"), None);
        assert_eq!(boundary("multipart/form-data; boundary=abc"), None);
    }

    #[test]
    fn parts_by_length_even_when_data_holds_the_boundary() {
        let tricky: &[u8] = b"xx\r\n--BOUND\r\nContent-Range: bytes 0-1/9\r\n\r\nyy";
        let b = body("BOUND", &[(3, b"abc"), (100, tricky)], 1000);
        let parts = parse("BOUND", &b).unwrap();
        assert_eq!(parts, vec![(3, b"abc".to_vec()), (100, tricky.to_vec())]);
        let got = pick(&[(4, 6), (100, 102), (3, 4)], &parts).unwrap();
        assert_eq!(got, vec![b"bc".to_vec(), b"xx".to_vec(), b"a".to_vec()]);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let good = body("B", &[(0, b"hello")], 5);
        assert!(parse("OTHER", &good).is_err());
        // Cut inside the data, or before the closing boundary.
        assert!(parse("B", &good[..good.len() - 12]).is_err());
        assert!(parse("B", &good[..good.len() - 5]).is_err());
        let no_range = b"--B\r\nContent-Type: x\r\n\r\nhello\r\n--B--\r\n";
        assert!(parse("B", no_range).is_err());
        let backwards = b"--B\r\nContent-Range: bytes 5-1/9\r\n\r\nhello\r\n--B--\r\n";
        assert!(parse("B", backwards).is_err());
        // Lengths that overflow any arithmetic are refused, not wrapped.
        let huge = format!(
            "--B\r\nContent-Range: bytes 0-{}/*\r\n\r\nx\r\n--B--\r\n",
            u64::MAX
        );
        assert!(parse("B", huge.as_bytes()).is_err());
        let parts = [(u64::MAX - 1, vec![1u8, 2])];
        assert!(pick(&[(u64::MAX - 1, u64::MAX)], &parts).is_ok());
    }

    #[test]
    fn pick_accepts_coalesced_or_whole_responses_and_reports_gaps() {
        let whole = vec![(0u64, (0u8..50).collect::<Vec<u8>>())];
        assert_eq!(pick(&[(10, 12)], &whole).unwrap(), vec![vec![10, 11]]);
        let err = pick(&[(40, 60)], &whole).unwrap_err();
        assert!(err.contains("40-59"), "{err}");
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(" bytes 1-2/3"), Some((1, 2)));
        assert_eq!(content_range("bytes 1-2/*"), Some((1, 2)));
        assert_eq!(content_range("bytes */3"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
