//! `GET /openapi.json`: the API's OpenAPI 3.1 document, `openapi.json` at the
//! repository root, built into the binary so the served copy is the file.

use bytes::Bytes;
use hyper::{Response, StatusCode};

use super::{json_bytes, Body};

/// The document, as the repository holds it.
pub const DOCUMENT: &str = include_str!("../../../openapi.json");

pub fn openapi() -> Response<Body> {
    json_bytes(StatusCode::OK, Bytes::from_static(DOCUMENT.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::http::error::ApiError;
    use crate::kind::Kind;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// The error kinds the document names are exactly the server's, and each
    /// sits in the error schema of the status `ApiError::status` gives it.
    #[test]
    fn every_error_kind_is_documented_under_its_status() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut documented = Vec::new();
        for (name, schema) in schemas {
            let Some(status) = name
                .strip_prefix("Error")
                .and_then(|s| s.parse::<u16>().ok())
            else {
                continue;
            };
            for kind in schema["properties"]["kind"]["enum"].as_array().unwrap() {
                let kind = kind.as_str().unwrap();
                let known = Kind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .unwrap_or_else(|| panic!("{name} names {kind:?}, which the server lacks"));
                assert_eq!(
                    ApiError::new(known, "x").status().as_u16(),
                    status,
                    "{kind}"
                );
                documented.push(kind.to_string());
            }
        }
        let all: Vec<String> = Kind::ALL.iter().map(|k| k.as_str().to_string()).collect();
        let mut sorted = documented.clone();
        sorted.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(sorted, expected, "each kind exactly once");
        let listed: Vec<&str> = schemas["ErrorKind"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            listed.iter().copied().collect::<BTreeSet<_>>(),
            all.iter().map(String::as_str).collect::<BTreeSet<_>>()
        );
    }

    /// Each operation's error statuses point at the error schema of that
    /// status; every route the router serves is described.
    #[test]
    fn every_route_and_answer_is_described() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let described: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let served: BTreeSet<&str> = super::super::router::route_paths().collect();
        assert_eq!(described, served);
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|status| status.starts_with('2')),
                    "{method} {path}"
                );
                for (status, response) in responses {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    if let Some(name) = schema
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/Error"))
                    {
                        assert_eq!(name, status, "{method} {path} {status}");
                    }
                }
            }
        }
        // The kinds /execute can answer: every one but the routing errors
        // and a snippet's owner.
        let execute = paths["/execute"]["post"]["responses"].as_object().unwrap();
        for kind in Kind::ALL {
            if matches!(
                kind,
                Kind::NotFound | Kind::MethodNotAllowed | Kind::Forbidden
            ) {
                continue;
            }
            let status = ApiError::new(kind, "x").status().as_u16().to_string();
            assert!(
                execute.contains_key(&status),
                "{} ({status})",
                kind.as_str()
            );
        }
    }

    #[test]
    fn the_served_body_is_the_document_ending_with_a_newline() {
        let response = openapi();
        assert_eq!(
            response.headers()[hyper::header::CONTENT_TYPE],
            "application/json"
        );
        assert!(DOCUMENT.ends_with("}\n") && !DOCUMENT.ends_with("\n\n"));
    }
}
