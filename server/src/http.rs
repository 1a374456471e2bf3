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

/// `GET`/`HEAD` of a store or metadata file, with single-range support. The file is streamed in
/// chunks (a pack can be gigabytes; hundreds of hosts may fetch one at once).
async fn serve_tree(server: Arc<Server>, req: HttpRequest<Body>) -> HttpResponse {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    let path = req.uri().path().to_string();
    let head = req.method() == axum::http::Method::HEAD;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Config read, canonicalize and stat are blocking file calls: off the reactor.
    let s2 = server.clone();
    let p2 = path.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, TreeError> {
        let conf = edeploy_spec::conf::ServerConf::load(
            &s2.conf_path,
            edeploy_spec::conf::DEFAULT_SECTION,
        )
        .map_err(|e| TreeError::Internal(e.to_string()))?;
        let file = trees::resolve(&conf, &p2)?;
        let len = std::fs::metadata(&file)
            .map_err(|e| TreeError::Internal(e.to_string()))?
            .len();
        Ok((file, len))
    })
    .await;
    let (file, len) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return tree_error(&server, &e),
        Err(e) => return tree_error(&server, &TreeError::Internal(format!("handler: {e}"))),
    };
    let area = if path.starts_with("/metadata/") {
        trees::Area::Metadata
    } else {
        trees::Area::Store
    };
    let (status, start, count) = match trees::parse_range(range.as_deref(), len) {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            server.metrics.tree_request(416);
            let mut resp = (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let body = if head || count == 0 {
        Body::empty()
    } else {
        let mut f = match tokio::fs::File::open(&file).await {
            Ok(f) => f,
            Err(e) => return tree_error(&server, &TreeError::Internal(e.to_string())),
        };
        if start > 0 {
            if let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await {
                return tree_error(&server, &TreeError::Internal(e.to_string()));
            }
        }
        const CHUNK: u64 = 256 << 10;
        let stream = futures_util::stream::unfold((f, count), |(mut f, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; left.min(CHUNK) as usize];
            match f.read(&mut buf).await {
                // The file shrank under us: end the body short so the client sees an error
                // (its Content-Length is not met) rather than silently wrong data.
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
