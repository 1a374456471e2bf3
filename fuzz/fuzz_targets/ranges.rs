//! Range requests both ways: the server's `Range` header parser (what a client may send) and the
//! client's `multipart/byteranges` parser (what a server may answer) never panic, and what they
//! accept stays within its bounds. Input: the first line is a `Range` header value and a file
//! length (`HEADER|LEN`) and also the multipart boundary; the rest is a multipart body.
#![no_main]
use libfuzzer_sys::fuzz_target;

use edeploy_server::trees::{parse_range, ByteRange, MAX_PARTS, MAX_PARTS_BYTES};
use edeploy_tree::byteranges;

fuzz_target!(|data: &[u8]| {
    let (first, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(first) = std::str::from_utf8(first) else { return };
    let (header, len) = match first.rsplit_once('|') {
        Some((h, l)) => (h, l.parse::<u64>().unwrap_or(1000)),
        None => (first, 1000),
    };
    match parse_range(Some(header), len) {
        ByteRange::Full => {}
        ByteRange::Unsatisfiable => {}
        ByteRange::Part { start, end } => assert!(start <= end && end < len),
        ByteRange::Parts(parts) => {
            assert!(parts.len() >= 2 && parts.len() <= MAX_PARTS);
            assert!(parts.iter().all(|&(s, e)| s <= e && e < len));
            let total: u64 = parts.iter().map(|(s, e)| e - s + 1).sum();
            assert!(total <= MAX_PARTS_BYTES);
        }
    }
    if let Ok(parts) = byteranges::parse(header, body) {
        // Every part is asked back whole, and a byte inside it alone: both are found.
        let wanted: Vec<(u64, u64)> = parts
            .iter()
            .filter_map(|(s, d)| Some((*s, s.checked_add(d.len() as u64)?)))
            .filter(|(s, e)| s < e)
            .flat_map(|(s, e)| [(s, e), (s, s + 1)])
            .collect();
        let got = byteranges::pick(&wanted, &parts).expect("ranges the parts hold");
        assert_eq!(got.len(), wanted.len());
    }
});
