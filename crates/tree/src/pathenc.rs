//! Path bytes ⇄ JSON strings. Linux names are arbitrary bytes; JSON strings are UTF-8. Valid
//! UTF-8 is kept as is (readable manifests), except `%`, control bytes and DEL, which become
//! `%XX`, as does every byte of an invalid UTF-8 sequence. Lossless both ways.

use crate::{Error, Result};

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' || (c as u32) < 0x20 || c as u32 == 0x7f {
                out.push_str(&format!("%{:02X}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Format(format!("bad %-escape in {s:?}")))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_odd_names() {
        for name in [
            &b"plain/name.txt"[..],
            b"sp ace",
            b"per%cent",
            b"new\nline",
            b"\xff\xfe invalid",
            "é漢字".as_bytes(),
            b"tab\there\x7f",
        ] {
            let e = encode(name);
            assert_eq!(decode(&e).unwrap(), name, "{e}");
        }
        assert_eq!(encode(b"a%b\n"), "a%25b%0A");
    }
}
