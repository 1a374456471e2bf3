//! The embedded front end: axum (hyper) on tokio. Bodies are read with the size cap, then the
//! synchronous pipeline runs on the blocking pool so a request waiting for the lock never stalls
//! the reactor.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request as HttpRequest, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Router;

use crate::pipeline::{Request, Response, Server, UploadError};

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
