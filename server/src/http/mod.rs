//! The HTTP API: routing, the handlers, and the one error type they answer
//! with. Handlers return `Result<Response, ApiError>`; the router turns the
//! error into its JSON answer, so hyper only ever sees `Ok`.

pub mod error;
pub mod execute;
pub mod health;
pub mod router;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Every response body is complete before it is sent.
pub type Body = Full<Bytes>;

/// A JSON response. Serializing our own body types cannot fail; if it somehow
/// did, the client still gets a JSON 500 rather than a dropped connection.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"the service failed to encode its answer","kind":"internal"}"#.to_vec(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
