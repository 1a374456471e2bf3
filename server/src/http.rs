//! The embedded front end: axum (hyper) on tokio. Tree GETs (`/trees/…`, `/metadata/…`) are
//! answered first, streamed from their file; every other request's body is read with the size
//! cap, then the synchronous pipeline runs on the blocking pool so a request waiting for the
//! lock never stalls the reactor.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request as HttpRequest, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Router;

use crate::pipeline::{Request, Response, Server, UploadError};
use crate::trees::{self, ByteRange, TreeError};

pub fn router(server: Arc<Server>) -> Router {
    Router::new().fallback(handle).with_state(server)
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(server: Arc<Server>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // No Nagle: a streamed response goes out as headers, then body chunks; with Nagle the
    // first chunk waited for the client's delayed ACK of the headers, up to ~40 ms per request
    // (a delta upgrade's 320 range requests, 16 at a time: 0.62 s with Nagle, 0.2 s without).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(server))
        .with_graceful_shutdown(shutdown())
        .await
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

async fn handle(State(server): State<Arc<Server>>, req: HttpRequest<Body>) -> HttpResponse {
    if trees::is_tree_request(req.method().as_str(), req.uri().path()) {
        // Before any body reading: a tree GET never goes through the upload buffering.
        return serve_tree(server, req).await;
    }
    let (parts, body) = req.into_parts();
    let max = server.max_upload;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > max) {
        // Refused before reading: a 4 GiB upload costs us nothing.
        server.metrics.failure("too_large");
        return convert(UploadError::TooLarge(n, max).to_response());
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            server.metrics.failure("too_large");
            return convert(UploadError::TooLarge(max + 1, max).to_response());
        }
    };
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let result = tokio::task::spawn_blocking(move || {
        server.handle(
            Request {
                method: &method,
                path: &path,
                content_type: &content_type,
                body: &bytes,
            },
            true,
        )
    })
    .await;
    match result {
        Ok(r) => convert(r),
        Err(e) => convert(UploadError::Internal(format!("handler failed: {e}")).to_response()),
    }
}

fn convert(r: Response) -> HttpResponse {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.body,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    if let Some(v) = r.reason.and_then(|s| HeaderValue::from_str(&s).ok()) {
        h.insert("x-edeploy-error", v);
    }
    resp
}

fn tree_error(server: &Server, e: &TreeError) -> HttpResponse {
    server.metrics.tree_request(e.status());
    let reason = e.reason().replace(|c: char| c.is_control(), " ");
    let mut resp = (
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        format!("{reason}\n"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&reason) {
        resp.headers_mut().insert("x-edeploy-error", v);
    }
    resp
}

/// A `multipart/byteranges` body (RFC 9110 §14.6) of `parts` (inclusive) of `file`, `len`
/// bytes long, and its content type. The parts are bounded by `trees::MAX_PARTS_BYTES`. (For a
/// HEAD the body is built all the same, its length is the Content-Length, and hyper drops it.)
fn byteranges(
    file: &std::fs::File,
    len: u64,
    parts: &[(u64, u64)],
) -> std::io::Result<(String, Vec<u8>)> {
    use std::os::unix::fs::FileExt;
    // Unique per response, and data cannot cut a part short: parts are read by length.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let boundary = format!(
        "edeploy-{nanos:016x}-{:x}",
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let total: u64 = parts.iter().map(|(s, e)| e - s + 1).sum();
    let mut body = Vec::with_capacity(total as usize + parts.len() * 128);
    for &(s, e) in parts {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {s}-{e}/{len}\r\n\r\n"
            )
            .as_bytes(),
        );
        let at = body.len();
        body.resize(at + (e - s + 1) as usize, 0);
        file.read_exact_at(&mut body[at..], s)?;
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((format!("multipart/byteranges; boundary={boundary}"), body))
}

/// `GET`/`HEAD` of a store or metadata file, with `Range` support (one range, or several as
/// `multipart/byteranges`). Up to `SMALL` bytes are read in the same blocking task that finds
/// the file and sent as one body (a delta upgrade asks for hundreds of small ranges: each
/// thread hop and write counted); more are streamed in chunks (a pack can be gigabytes;
/// hundreds of hosts may fetch one at once).
async fn serve_tree(server: Arc<Server>, req: HttpRequest<Body>) -> HttpResponse {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    const SMALL: u64 = 1 << 20;

    let path = req.uri().path().to_string();
    let head = req.method() == axum::http::Method::HEAD;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    enum Found {
        Unsatisfiable(u64),
        Multipart {
            ctype: String,
            body: Vec<u8>,
        },
        Range {
            len: u64,
            start: u64,
            count: u64,
            partial: bool,
            data: Data,
        },
    }
    enum Data {
        None,
        Read(Vec<u8>),
        Stream(std::fs::File),
    }
    // Config read, canonicalize, stat and small reads are blocking file calls: off the reactor.
    let s2 = server.clone();
    let p2 = path.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Found, TreeError> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let internal = |e: std::io::Error| TreeError::Internal(e.to_string());
        let conf = edeploy_spec::conf::ServerConf::load(
            &s2.conf_path,
            edeploy_spec::conf::DEFAULT_SECTION,
        )
        .map_err(|e| TreeError::Internal(e.to_string()))?;
        let path = trees::resolve(&conf, &p2)?;
        let mut file = std::fs::File::open(&path).map_err(internal)?;
        let len = file.metadata().map_err(internal)?.len();
        let (start, count, partial) = match trees::parse_range(range.as_deref(), len) {
            ByteRange::Full => (0, len, false),
            ByteRange::Part { start, end } => (start, end - start + 1, true),
            ByteRange::Parts(parts) => {
                let (ctype, body) = byteranges(&file, len, &parts).map_err(internal)?;
                return Ok(Found::Multipart { ctype, body });
            }
            ByteRange::Unsatisfiable => return Ok(Found::Unsatisfiable(len)),
        };
        let data = if head || count == 0 {
            Data::None
        } else if count <= SMALL {
            let mut buf = vec![0u8; count as usize];
            // A file that shrank under us fails here (UnexpectedEof): a 500, not short data.
            file.read_exact_at(&mut buf, start).map_err(internal)?;
            Data::Read(buf)
        } else {
            file.seek(SeekFrom::Start(start)).map_err(internal)?;
            Data::Stream(file)
        };
        Ok(Found::Range {
            len,
            start,
            count,
            partial,
            data,
        })
    })
    .await;
    let (len, start, count, partial, data) = match found {
        Ok(Ok(Found::Range {
            len,
            start,
            count,
            partial,
            data,
        })) => (len, start, count, partial, data),
        Ok(Ok(Found::Multipart { ctype, body })) => {
            server.metrics.tree_request(206);
            let n = body.len() as u64;
            let mut resp = (StatusCode::PARTIAL_CONTENT, body).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&ctype) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return resp;
        }
        Ok(Ok(Found::Unsatisfiable(len))) => {
            server.metrics.tree_request(416);
            let mut resp = (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
        Ok(Err(e)) => return tree_error(&server, &e),
        Err(e) => return tree_error(&server, &TreeError::Internal(format!("handler: {e}"))),
    };
    let status = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let area = if path.starts_with("/metadata/") {
        trees::Area::Metadata
    } else {
        trees::Area::Store
    };
    let body = match data {
        Data::None => Body::empty(),
        Data::Read(buf) => Body::from(buf),
        Data::Stream(f) => {
            let f = tokio::fs::File::from_std(f);
            const CHUNK: u64 = 256 << 10;
            let stream = futures_util::stream::unfold((f, count), |(mut f, left)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf = vec![0u8; left.min(CHUNK) as usize];
                match f.read(&mut buf).await {
                    // The file shrank under us: end the body short so the client sees an
                    // error (its Content-Length is not met) rather than silently wrong data.
                    Ok(0) => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file shrank while being sent",
                        )),
                        (f, 0),
                    )),
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(axum::body::Bytes::from(buf)), (f, left - n as u64)))
                    }
                    Err(e) => Some((Err(e), (f, 0))),
                }
            })
            .boxed();
            Body::from_stream(stream)
        }
    };
    server.metrics.tree_request(status.as_u16());
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(trees::content_type(area, &path)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}
