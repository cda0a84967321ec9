//! Saved snippets: `POST /v1/snippets` saves a script with its input and
//! limits under an id of 128 random bits, `GET /v1/snippets/{id}` reads one
//! (no key needed: a shared link opens for anyone who has it), `DELETE
//! /v1/snippets/{id}` removes one (with keys on, only by the key that saved
//! it). A snippet is held to the same caps as a request to /execute.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use pyexec_store::{NewSnippet, SnippetDeletion, SnippetId, StoreError};
use pyexec_worker::Sandbox;
use serde::Serialize;
use serde_json::value::RawValue;

use super::body::{check_content_type, read_body, too_large};
use super::error::ApiError;
use super::request::{parse_request, Ceilings};
use super::{json_response, Body};
use crate::callers::{Caller, Refusal};
use crate::kind::Kind;
use crate::state::AppState;

#[derive(Serialize)]
struct Created {
    id: String,
    /// Where the playground opens it, relative to this server.
    url: String,
}

#[derive(Serialize)]
struct Saved<'a> {
    id: &'a str,
    script: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<&'a RawValue>,
    /// RFC 3339, UTC.
    created_at: String,
}

pub async fn create<S: Sandbox>(
    state: &AppState<S>,
    request: Request<Incoming>,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    check_content_type(request.headers())?;
    let limits = &state.limits;
    let read = read_body(request.into_body(), limits.max_body_bytes, |prefix| {
        too_large(prefix, limits)
    });
    let body = tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| ApiError::request_timeout(limits))??;
    // The same checks as a request to /execute: a snippet is one, saved.
    let parsed = parse_request(&body, limits, &Ceilings::of_server(limits))?;
    let limits_sent =
        serde_json::from_slice::<std::collections::BTreeMap<String, &RawValue>>(&body)
            .ok()
            .and_then(|fields| fields.get("limits").map(|l| l.get().to_string()));
    let snippet = NewSnippet {
        key_id: caller.key_id(),
        script: parsed.script.text,
        input: parsed.input.map(|i| i.get().to_string()),
        limits: limits_sent,
    };
    let store = store(state)?;
    let saved = store.create_snippet(&snippet).await.map_err(store_error)?;
    let id = saved.id.to_string();
    let mut response = json_response(
        StatusCode::CREATED,
        &Created {
            url: format!("/s/{id}"),
            id,
        },
    );
    if let Ok(location) =
        hyper::header::HeaderValue::from_str(&format!("/v1/snippets/{}", saved.id))
    {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, location);
    }
    Ok(response)
}

pub async fn read<S: Sandbox>(state: &AppState<S>, id: &str) -> Result<Response<Body>, ApiError> {
    let id = SnippetId::parse(id).ok_or_else(|| not_found(id))?;
    let store = store(state)?;
    let snippet = store
        .get_snippet(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id.as_str()))?;
    let raw = |text: &Option<String>| {
        text.as_ref()
            .and_then(|t| RawValue::from_string(t.clone()).ok())
    };
    let (input, limits) = (raw(&snippet.input), raw(&snippet.limits));
    Ok(json_response(
        StatusCode::OK,
        &Saved {
            id: snippet.id.as_str(),
            script: &snippet.script,
            input: input.as_deref(),
            limits: limits.as_deref(),
            created_at: rfc3339(snippet.created_at),
        },
    ))
}

pub async fn delete<S: Sandbox>(
    state: &AppState<S>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let id = SnippetId::parse(id).ok_or_else(|| not_found(id))?;
    let store = store(state)?;
    match store
        .delete_snippet(&id, caller.key_id().as_ref())
        .await
        .map_err(store_error)?
    {
        SnippetDeletion::Deleted => {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        SnippetDeletion::NotFound => Err(not_found(id.as_str())),
        SnippetDeletion::NotOwner => Err(ApiError::new(
            Kind::Forbidden,
            "this snippet was saved by another key; only that key can delete it",
        )),
    }
}

fn store<S: Sandbox>(state: &AppState<S>) -> Result<&dyn pyexec_store::Store, ApiError> {
    state
        .callers
        .store()
        .map(|s| s.as_ref())
        .ok_or_else(|| ApiError::from_refusal(&Refusal::StoreUnavailable))
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(why) => ApiError {
            detail: Some(why),
            ..ApiError::from_refusal(&Refusal::StoreUnavailable)
        },
        StoreError::Invalid(why) => {
            ApiError::invalid_request(format!("the snippet was refused: {why}"))
        }
        other => ApiError::internal(format!("store: {other}")),
    }
}

fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(40).collect();
    ApiError::new(Kind::NotFound, format!("there is no snippet {shown:?}"))
}

/// `2026-12-03T14:51:31Z` from unix seconds.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = crate::logging::civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_309_491), "2026-12-03T14:51:31Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
