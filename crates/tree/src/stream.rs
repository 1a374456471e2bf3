//! The data path as stacked `Read` adapters: pack record → limit (`Read::take`) → decompress
//! (zstd, if the record says so) → hash-verify → sparse writer. Each adapter is small and
//! tested on bytes in memory.

use std::io::{self, Read};

use crate::manifest::{hex, Hash};

/// Hashes everything read through it; at EOF the hash must equal `expected`, else the read
/// fails with `InvalidData`, so a consumer never sees a clean EOF for corrupted content.
pub struct HashVerify<R> {
    inner: R,
    hasher: blake3::Hasher,
    expected: Hash,
    checked: bool,
}

impl<R: Read> HashVerify<R> {
    pub fn new(inner: R, expected: Hash) -> Self {
        HashVerify {
            inner,
            hasher: blake3::Hasher::new(),
            expected,
            checked: false,
        }
    }
}

impl<R: Read> Read for HashVerify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if !self.checked {
                let got = *self.hasher.finalize().as_bytes();
                if got != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "content hash mismatch: expected {}, got {}",
                            hex(&self.expected),
                            hex(&got)
                        ),
                    ));
                }
                self.checked = true;
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts bytes read and reports them to a callback (progress bars, JSON progress).
pub struct Counting<R, F: FnMut(u64)> {
    inner: R,
    on_read: F,
}

impl<R: Read, F: FnMut(u64)> Counting<R, F> {
    pub fn new(inner: R, on_read: F) -> Self {
        Counting { inner, on_read }
    }
}

impl<R: Read, F: FnMut(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// Blob encodings (first byte of a stored blob, and of a pack record's tag).
pub const TAG_RAW: u8 = 0;
pub const TAG_ZSTD: u8 = 1;

/// Decode a stored payload of `tag` from `r` (already limited to the stored length).
pub fn decoder<'a, R: Read + 'a>(tag: u8, r: R) -> io::Result<Box<dyn Read + 'a>> {
    match tag {
        TAG_RAW => Ok(Box::new(r)),
        TAG_ZSTD => Ok(Box::new(zstd::Decoder::new(r)?)),
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown blob encoding {t}"),
        )),
    }
}

/// Pack stream framing: `PACK_MAGIC`, then records `hash[32] tag[1] len[u64 LE] bytes[len]`.
pub const PACK_MAGIC: &[u8; 8] = b"EDPACK1\n";
pub const RECORD_HEADER: u64 = 41;

pub struct RecordHeader {
    pub hash: Hash,
    pub tag: u8,
    pub len: u64,
}

/// Read one record header; `Ok(None)` at a clean end of stream.
pub fn read_record_header(r: &mut impl Read) -> io::Result<Option<RecordHeader>> {
    let mut h = [0u8; RECORD_HEADER as usize];
    let mut got = 0;
    while got < h.len() {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated pack record header",
            ));
        }
        got += n;
    }
    Ok(Some(RecordHeader {
        hash: h[..32].try_into().unwrap(),
        tag: h[32],
        len: u64::from_le_bytes(h[33..41].try_into().unwrap()),
    }))
}

pub fn write_record_header(
    w: &mut impl io::Write,
    hash: &Hash,
    tag: u8,
    len: u64,
) -> io::Result<()> {
    w.write_all(hash)?;
    w.write_all(&[tag])?;
    w.write_all(&len.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_accepts_and_refuses() {
        let data = b"hello world".to_vec();
        let h = *blake3::hash(&data).as_bytes();
        let mut out = Vec::new();
        HashVerify::new(&data[..], h).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        let mut bad = data.clone();
        bad[0] ^= 1;
        let err = HashVerify::new(&bad[..], h)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn stacked_decompress_verify_limit() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let h = *blake3::hash(&data).as_bytes();
        let z = zstd::encode_all(&data[..], 3).unwrap();
        let mut stream = Vec::new();
        write_record_header(&mut stream, &h, TAG_ZSTD, z.len() as u64).unwrap();
        stream.extend_from_slice(&z);
        stream.extend_from_slice(b"trailing bytes of the next record");
        let mut r = &stream[..];
        let hdr = read_record_header(&mut r).unwrap().unwrap();
        assert_eq!(hdr.len, z.len() as u64);
        let mut limited = (&mut r).take(hdr.len);
        let mut out = Vec::new();
        let mut total = 0;
        Counting::new(
            HashVerify::new(decoder(hdr.tag, &mut limited).unwrap(), hdr.hash),
            |n| total += n,
        )
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, data);
        assert_eq!(total, data.len() as u64);
        assert_eq!(r, b"trailing bytes of the next record");
    }

    #[test]
    fn truncated_header_is_an_error() {
        assert!(read_record_header(&mut &b""[..]).unwrap().is_none());
        assert!(read_record_header(&mut &[0u8; 10][..]).is_err());
    }
}
