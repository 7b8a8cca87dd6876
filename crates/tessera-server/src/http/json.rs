//! JSON responses of the token path, serialized into a buffer sized for them.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_core::TokenError;

/// `value` as an `application/json` response, serialized into a buffer of
/// `capacity` bytes. `axum::Json` starts at 128 bytes and grows by
/// `realloc`, which in glibc always takes the lock of the arena the memory
/// came from. Memory moves between the worker threads' arenas, so under
/// load the two workers queued on each other's locks (docs/performance.md,
/// thirteenth pass).
pub fn json_response<T: Serialize>(value: &T, capacity: usize) -> Result<Response, TokenError> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value).map_err(|_| TokenError::ServerError)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
