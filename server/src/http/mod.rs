//! The HTTP API: routing, the handlers, and the one error type they answer
//! with. Handlers return `Result<Response, ApiError>`; the router turns the
//! error into its JSON answer, so hyper only ever sees `Ok`.
//!
//! A route is a row of `router::ROUTES` (its path and methods, also its
//! metrics label), an arm of `router::dispatch` calling its handler, the
//! handler in a module of its own here, and its entry in openapi.json (a test
//! checks every route is described). A handler that takes a JSON body uses
//! [`body`]'s content-type check and capped read, with its own answer for a
//! body over its cap.

pub mod body;
pub mod error;
pub mod execute;
pub mod health;
pub mod info;
pub mod openapi;
pub mod playground;
pub mod request;
pub mod router;
pub mod script_output;
pub mod snippets;
pub mod usage;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Every response body is complete before it is sent.
pub type Body = Full<Bytes>;

/// A JSON response, ending with one newline as Flask's did: clients of the
/// service pyexec replaces read `curl -w "%{http_code}"` as the last line of
/// the output, and a terminal prompt then starts on a line of its own.
/// Serializing our own body types cannot fail; if it somehow did, the client
/// still gets a JSON 500 rather than a dropped connection.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            (status, bytes)
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            b"{\"error\":\"the service failed to encode its answer\",\"kind\":\"internal\"}\n"
                .to_vec(),
        ),
    };
    json_bytes(status, Bytes::from(bytes))
}

/// A response of JSON that is already encoded.
pub fn json_bytes(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: Response<Body>) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn a_body_ends_with_exactly_one_newline() {
        let response = json_response(StatusCode::OK, &serde_json::json!({"a": "x\n"}));
        assert_eq!(body_of(response).await, b"{\"a\":\"x\\n\"}\n");
    }

    /// A value whose serialization fails, to reach the fallback body.
    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }

    #[tokio::test]
    async fn the_fallback_body_is_json_with_a_newline_too() {
        let response = json_response(StatusCode::OK, &Unserializable);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response).await;
        assert!(body.ends_with(b"}\n") && !body.ends_with(b"\n\n"));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["kind"], "internal");
    }
}
