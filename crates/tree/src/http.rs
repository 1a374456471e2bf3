//! [`HttpSource`]: the [`Source`] trait over the server's tree routes, so the initrd and the
//! installed host read a store over HTTP exactly as [`crate::source::LocalSource`] reads it
//! from disk. The routes mirror the store layout, so a plain static web server pointed at the
//! store serves everything but the upgrade metadata:
//!
//! ```text
//! GET BASE/trees/manifests/VERSION/ROLE.manifest[.sig]
//! GET BASE/trees/packs/MANIFESTHASH.idx
//! GET BASE/trees/packs/MANIFESTHASH.pack        Range: bytes=OFFSET-   (206)
//! GET BASE/trees/blobs/ab/HASH
//! GET BASE/trees/upgrades/FROM/ROLE             one target version per line
//! GET BASE/metadata/FROM/ROLE/TO/NAME           exclude, add_only, pre, post
//! ```
//!
//! Small GETs are retried with backoff on connection errors and 5xx; streamed bodies (packs,
//! blobs) resume with a `Range` request after a dropped connection ([`Resuming`]). rustls
//! only: this code links into the static initrd, which has no OpenSSL.

use std::io::{self, Read};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use crate::manifest::{hex, unhex32, Hash};
use crate::source::Source;
use crate::store::PackIndex;
use crate::{Error, Result};

/// Attempts of one small GET (connection errors and 5xx are retried, 4xx are not).
const ATTEMPTS: u32 = 4;
/// Re-opens of a streamed body after a dropped connection, without progress in between.
pub const RESUMES: u32 = 5;

pub struct HttpSource {
    /// Without a trailing `/`, e.g. `http://10.0.2.2:8080` or `http://host/edeploy`.
    base: String,
    client: Client,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(5))
}

/// What one try of a request gave: an answer, or a failure worth another try (a dropped
/// connection, a 5xx). A failure that is final is the closure's `Err`.
enum Step<T> {
    Done(T),
    Retry(Error),
}

/// `once` until it answers, at most `ATTEMPTS` tries with a growing pause between them.
fn retrying<T>(mut once: impl FnMut() -> Result<Step<T>>) -> Result<T> {
    let mut attempt = 0;
    loop {
        match once()? {
            Step::Done(v) => return Ok(v),
            Step::Retry(e) => {
                attempt += 1;
                if attempt >= ATTEMPTS {
                    return Err(e);
                }
                std::thread::sleep(backoff(attempt));
            }
        }
    }
}

fn net(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(io::Error::other(format!("{url}: {e}")))
}

/// A path component that goes into a URL: the names we send are version/role names and hex,
/// so anything that would need escaping is refused rather than escaped.
fn component(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~@:=,".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "{what} {s:?} cannot be used in a URL"
        )))
    }
}

/// The HTTP client of every tree download (pack, blobs, images).
pub(crate) fn client() -> Result<Client> {
    Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // In the blocking client this bounds the wait for the headers and each body read (an
        // idle timeout), not the whole transfer: a pack of gigabytes may take long.
        .timeout(Duration::from_secs(60))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Other(format!("HTTP client: {e}")))
}

impl HttpSource {
    /// `base` is `http://HOST[:PORT][/PREFIX]` (or `https://`); the routes are appended to it.
    pub fn new(base: &str) -> Result<HttpSource> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| Error::Other(format!("tree source {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::Other(format!(
                "tree source {base:?}: expected http://HOST[:PORT][/PATH]"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Other(format!(
                "tree source {base:?}: no query or fragment allowed"
            )));
        }
        let client = client()?;
        Ok(HttpSource {
            base: url.as_str().trim_end_matches('/').to_string(),
            client,
        })
    }

    fn url(&self, route: &str) -> String {
        format!("{}/{route}", self.base)
    }

    /// GET with retries; `None` on 404. Connection errors and 5xx are retried with backoff.
    fn get(&self, url: &str, range_from: u64) -> Result<Option<Response>> {
        self.get_range(url, range_from, None)
    }

    /// [`HttpSource::get`] of bytes `range_from..range_end` (`range_end` exclusive; `None`: to
    /// the end of the file).
    fn get_range(
        &self,
        url: &str,
        range_from: u64,
        range_end: Option<u64>,
    ) -> Result<Option<Response>> {
        retrying(|| {
            let mut req = self.client.get(url);
            match range_end {
                Some(end) => {
                    let last = end.saturating_sub(1);
                    req = req.header(RANGE, format!("bytes={range_from}-{last}"));
                }
                None if range_from > 0 => {
                    req = req.header(RANGE, format!("bytes={range_from}-"));
                }
                None => {}
            }
            Ok(match req.send() {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => Step::Done(None),
                Ok(r) if r.status().is_server_error() => Step::Retry(net(url, r.status())),
                Ok(r) if r.status().is_success() => {
                    Step::Done(Some(check_range(url, r, range_from, range_end.is_some())?))
                }
                Ok(r) => return Err(net(url, r.status())),
                Err(e) => Step::Retry(net(url, error_chain(&e))),
            })
        })
    }

    /// A whole small body (manifests, indexes, metadata); `None` on 404.
    fn get_bytes(&self, route: &str) -> Result<Option<Vec<u8>>> {
        let url = self.url(route);
        retrying(|| {
            let Some(mut r) = self.get(&url, 0)? else {
                return Ok(Step::Done(None));
            };
            let mut buf = Vec::new();
            Ok(match r.read_to_end(&mut buf) {
                Ok(_) => Step::Done(Some(buf)),
                Err(e) => Step::Retry(net(&url, e)),
            })
        })
    }

    fn must(&self, route: &str, what: String) -> Result<Vec<u8>> {
        self.get_bytes(route)?.ok_or(Error::NotFound(what))
    }

    /// A streamed body from `offset`, resumed with `Range` after a dropped connection.
    fn stream(&self, route: String, offset: u64, what: String) -> Result<Box<dyn Read + Send>> {
        let url = self.url(&route);
        let first = self.get(&url, offset)?.ok_or(Error::NotFound(what))?;
        let end = first.content_length().map(|n| n + offset);
        let client = HttpSource {
            base: self.base.clone(),
            client: self.client.clone(),
        };
        let reopen = move |at: u64| -> Result<Box<dyn Read + Send>> {
            let r = client
                .get(&url, at)?
                .ok_or_else(|| Error::NotFound(url.clone()))?;
            Ok(Box::new(r))
        };
        Ok(Box::new(Resuming::new(
            Box::new(first),
            reopen,
            offset,
            end,
        )))
    }
}

/// The whole error chain of a reqwest error: its Display alone says only "error sending
/// request", which helps no operator.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// A request from `offset` > 0 must get exactly that tail (206 starting at `offset`); a 200
/// would be the whole body and silently shift every record.
fn check_range(url: &str, r: Response, offset: u64, bounded: bool) -> Result<Response> {
    if offset == 0 && !bounded {
        return Ok(r);
    }
    if r.status() != StatusCode::PARTIAL_CONTENT {
        return Err(net(
            url,
            format!(
                "asked for bytes {offset}-, got {} (no Range support?)",
                r.status()
            ),
        ));
    }
    let start = range_start(&r);
    if start != Some(offset) {
        return Err(net(
            url,
            format!("asked for bytes {offset}-, got {start:?}"),
        ));
    }
    Ok(r)
}

/// Most bytes read from one multi-range response (a server that ignored the ranges and sent
/// a whole huge blob is cut off here, and the delta falls back to the plain blob).
const BYTERANGES_MAX: u64 = 64 << 20;

impl Source for HttpSource {
    fn manifest(&self, version: &str, role: &str) -> Result<Vec<u8>> {
        component("version", version)?;
        component("role", role)?;
        self.must(
            &format!("trees/manifests/{version}/{role}.manifest"),
            format!("manifest {version}/{role} at {}", self.base),
        )
    }

    fn manifest_signature(&self, version: &str, role: &str) -> Result<Option<Vec<u8>>> {
        component("version", version)?;
        component("role", role)?;
        self.get_bytes(&format!("trees/manifests/{version}/{role}.manifest.sig"))
    }

    fn pack_index(&self, manifest: &Hash) -> Result<PackIndex> {
        let b = self.must(
            &format!("trees/packs/{}.idx", hex(manifest)),
            format!("pack index {}", hex(manifest)),
        )?;
        let idx: PackIndex = serde_json::from_slice(&b)?;
        if unhex32(&idx.manifest)? != *manifest {
            return Err(Error::Integrity("pack index names another manifest".into()));
        }
        Ok(idx)
    }

    /// Not resumed here: install wraps every source's pack in [`Resuming`] itself (it knows
    /// the pack's length from the index), so a second layer would only multiply the retries.
    fn pack(&self, manifest: &Hash, offset: u64) -> Result<Box<dyn Read + Send>> {
        let x = hex(manifest);
        let url = self.url(&format!("trees/packs/{x}.pack"));
        let r = self
            .get(&url, offset)?
            .ok_or_else(|| Error::NotFound(format!("pack {x}")))?;
        Ok(Box::new(r))
    }

    fn signature(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.get_bytes(&format!("trees/{}", crate::delta::sig_route(hash)))
    }

    /// One bounded `Range` request (retried like the small GETs: ranges are small).
    fn blob_range(&self, hash: &Hash, start: u64, end: u64) -> Result<Vec<u8>> {
        let x = hex(hash);
        let url = self.url(&format!("trees/blobs/{}/{x}", &x[..2]));
        retrying(|| {
            let r = self
                .get_range(&url, start, Some(end))?
                .ok_or_else(|| Error::NotFound(format!("blob {x}")))?;
            let mut buf = Vec::with_capacity((end - start) as usize);
            Ok(match r.take(end - start).read_to_end(&mut buf) {
                Ok(_) => Step::Done(buf),
                Err(e) => Step::Retry(net(&url, e)),
            })
        })
    }

    /// One request for all `ranges` (`Range: bytes=a-b,c-d,…`), answered as
    /// `multipart/byteranges`, as one coalesced range, or as the whole blob.
    fn blob_ranges(&self, hash: &Hash, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        if ranges.len() <= 1 {
            return ranges
                .iter()
                .map(|&(s, e)| self.blob_range(hash, s, e))
                .collect();
        }
        let x = hex(hash);
        let url = self.url(&format!("trees/blobs/{}/{x}", &x[..2]));
        let spec: Vec<String> = ranges
            .iter()
            .map(|&(s, e)| format!("{s}-{}", e.saturating_sub(1)))
            .collect();
        let spec = format!("bytes={}", spec.join(","));
        retrying(|| {
            let r = match self.client.get(&url).header(RANGE, &spec).send() {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    return Err(Error::NotFound(format!("blob {x}")))
                }
                Ok(r) if r.status().is_server_error() => {
                    return Ok(Step::Retry(net(&url, r.status())))
                }
                Ok(r) if r.status().is_success() => r,
                Ok(r) => return Err(net(&url, r.status())),
                Err(e) => return Ok(Step::Retry(net(&url, error_chain(&e)))),
            };
            let ctype = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let start = match r.status() {
                StatusCode::PARTIAL_CONTENT => range_start(&r),
                _ => Some(0),
            };
            let mut body = Vec::new();
            if let Err(e) = r.take(BYTERANGES_MAX).read_to_end(&mut body) {
                return Ok(Step::Retry(net(&url, e)));
            }
            let parts = match (crate::byteranges::boundary(&ctype), start) {
                (Some(b), _) => crate::byteranges::parse(b, &body),
                (None, Some(s)) => Ok(vec![(s, body)]),
                (None, None) => Err("206 without Content-Range".to_string()),
            };
            parts
                .and_then(|p| crate::byteranges::pick(ranges, &p))
                .map(Step::Done)
                .map_err(|why| net(&url, why))
        })
    }

    fn blob(&self, hash: &Hash) -> Result<(u8, Box<dyn Read + Send>)> {
        let x = hex(hash);
        let mut r = self.stream(
            format!("trees/blobs/{}/{x}", &x[..2]),
            0,
            format!("blob {x}"),
        )?;
        let mut tag = [0u8];
        r.read_exact(&mut tag)?;
        Ok((tag[0], r))
    }

    fn metadata(&self, from: &str, role: &str, to: &str, name: &str) -> Result<Option<Vec<u8>>> {
        for (w, s) in [
            ("version", from),
            ("role", role),
            ("version", to),
            ("name", name),
        ] {
            component(w, s)?;
        }
        self.get_bytes(&format!("metadata/{from}/{role}/{to}/{name}"))
    }

    fn upgrades(&self, from: &str, role: &str) -> Result<Vec<String>> {
        component("version", from)?;
        component("role", role)?;
        let Some(b) = self.get_bytes(&format!("trees/upgrades/{from}/{role}"))? else {
            return Ok(Vec::new());
        };
        let text =
            String::from_utf8(b).map_err(|_| Error::Format("upgrades list is not UTF-8".into()))?;
        let mut out: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// A byte stream that survives dropped connections: on a read error, or an EOF before the
/// known end, it re-opens the stream at the first byte not yet delivered (over HTTP a
/// `Range: bytes=POS-` request) and goes on. Bounded: [`RESUMES`] re-opens in a row without a
/// byte of progress, then the error is returned. Whatever it splices is still checked by the
/// record hashes downstream, so a server that changed the file in between fails loudly.
pub struct Resuming<F> {
    inner: Box<dyn Read + Send>,
    reopen: F,
    pos: u64,
    end: Option<u64>,
    failures: u32,
    delay: Duration,
}

impl<F: FnMut(u64) -> Result<Box<dyn Read + Send>>> Resuming<F> {
    /// `inner` starts at byte `pos`; `end` is the total length when known (an EOF before it is
    /// a dropped connection, not the end).
    pub fn new(inner: Box<dyn Read + Send>, reopen: F, pos: u64, end: Option<u64>) -> Self {
        Resuming {
            inner,
            reopen,
            pos,
            end,
            failures: 0,
            delay: Duration::from_millis(250),
        }
    }

    /// First wait before a re-open (doubled on each failure in a row); tests shorten it.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

impl<F: FnMut(u64) -> Result<Box<dyn Read + Send>>> Read for Resuming<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let err = match self.inner.read(buf) {
                Ok(0) if self.end.is_some_and(|e| self.pos < e) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "stream ended at byte {} of {}",
                        self.pos,
                        self.end.unwrap_or(0)
                    ),
                ),
                Ok(n) => {
                    self.pos += n as u64;
                    if n > 0 {
                        self.failures = 0;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            // Re-open until one succeeds or the budget is spent; the last error says why.
            let mut last = err;
            loop {
                if self.failures >= RESUMES {
                    return Err(io::Error::new(
                        last.kind(),
                        format!("{last} (gave up after {RESUMES} resumes)"),
                    ));
                }
                self.failures += 1;
                std::thread::sleep(self.delay * (1 << self.failures.min(6)) / 2);
                match (self.reopen)(self.pos) {
                    Ok(r) => {
                        self.inner = r;
                        break;
                    }
                    Err(e) => last = io::Error::other(e.to_string()),
                }
            }
        }
    }
}

/// The first byte a `206` answer carries, from its `Content-Range: bytes START-END/LEN`.
pub(crate) fn range_start(r: &reqwest::blocking::Response) -> Option<u64> {
    r.headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::byteranges::content_range)
        .map(|(first, _)| first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data[pos..]` but fails after `cut` bytes, like a connection that drops.
    struct Flaky {
        data: std::sync::Arc<Vec<u8>>,
        pos: usize,
        left: usize,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = buf.len().min(self.left).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn resumes_at_the_first_byte_not_delivered() {
        let data: std::sync::Arc<Vec<u8>> =
            std::sync::Arc::new((0..10_000u32).map(|i| (i % 251) as u8).collect());
        let d2 = data.clone();
        let opens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let o2 = opens.clone();
        let first = Flaky {
            data: data.clone(),
            pos: 100,
            left: 777,
        };
        let mut r = Resuming::new(
            Box::new(first),
            move |at: u64| -> Result<Box<dyn Read + Send>> {
                o2.lock().unwrap().push(at);
                Ok(Box::new(Flaky {
                    data: d2.clone(),
                    pos: at as usize,
                    left: 3000,
                }))
            },
            100,
            Some(10_000),
        )
        .delay(Duration::from_millis(1));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data[100..]);
        assert_eq!(*opens.lock().unwrap(), vec![877, 3877, 6877, 9877]);
    }

    #[test]
    fn gives_up_without_progress() {
        let mut r = Resuming::new(
            Box::new(io::empty()),
            |_at: u64| -> Result<Box<dyn Read + Send>> { Err(Error::Other("refused".into())) },
            0,
            Some(10),
        )
        .delay(Duration::from_millis(1));
        let e = r.read(&mut [0u8; 4]).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[test]
    fn url_components() {
        assert!(component("v", "D7-H.1.0.0").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a%2e", "a?b", "a#b", "a\\b"] {
            assert!(component("v", bad).is_err(), "{bad:?}");
        }
        assert!(HttpSource::new("ftp://x").is_err());
        assert!(HttpSource::new("/srv/store").is_err());
        let s = HttpSource::new("http://10.0.2.2:8080/edeploy/").unwrap();
        assert_eq!(s.describe(), "http://10.0.2.2:8080/edeploy");
    }
}
