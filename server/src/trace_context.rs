//! The trace a request belongs to, from W3C `traceparent` or Google's
//! `X-Cloud-Trace-Context`, in the form Cloud Logging links logs to traces by.

use hyper::HeaderMap;

/// A trace and span id as Cloud Logging wants them: 32 and 16 lowercase hex
/// digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
}

impl TraceContext {
    /// `traceparent` wins over `X-Cloud-Trace-Context` when both are present
    /// and valid; malformed headers are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("traceparent")
            .and_then(parse_traceparent)
            .or_else(|| header("x-cloud-trace-context").and_then(parse_cloud_trace_context))
    }

    /// The value of the `logging.googleapis.com/trace` log field.
    pub fn log_field(&self, project: &str) -> String {
        format!("projects/{project}/traces/{}", self.trace_id)
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; later versions may
/// append fields, which we ignore as the spec asks.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if !is_hex(version, 2)
        || version.eq_ignore_ascii_case("ff")
        || (version == "00" && parts.next().is_some())
    {
        return None;
    }
    if !is_hex(trace_id, 32)
        || !is_hex(span_id, 16)
        || !is_hex(flags, 2)
        || all_zero(trace_id)
        || all_zero(span_id)
    {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        span_id: span_id.to_ascii_lowercase(),
        sampled: flags & 1 == 1,
    })
}

/// `TRACE_ID/SPAN_ID;o=OPTIONS` with a decimal span id, which Cloud Logging
/// wants as 16 hex digits. The span and options may be missing.
pub fn parse_cloud_trace_context(value: &str) -> Option<TraceContext> {
    let (ids, options) = match value.trim().split_once(';') {
        Some((ids, options)) => (ids, Some(options)),
        None => (value.trim(), None),
    };
    let (trace_id, span) = match ids.split_once('/') {
        Some((trace_id, span)) => (trace_id, Some(span)),
        None => (ids, None),
    };
    if !is_hex(trace_id, 32) || all_zero(trace_id) {
        return None;
    }
    let span_id = match span {
        Some(span) if !span.is_empty() => format!("{:016x}", span.parse::<u64>().ok()?),
        _ => String::new(),
    };
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        span_id,
        sampled: options.is_some_and(|o| o.trim() == "o=1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn traceparent() {
        let t =
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, "00f067aa0ba902b7");
        assert!(t.sampled);
        assert_eq!(
            t.log_field("p1"),
            "projects/p1/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            !parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn cloud_trace_context() {
        let t = parse_cloud_trace_context("105445aa7843bc8bf206b12000100000/1;o=1").unwrap();
        assert_eq!(t.trace_id, "105445aa7843bc8bf206b12000100000");
        assert_eq!(t.span_id, "0000000000000001");
        assert!(t.sampled);
        let t = parse_cloud_trace_context("105445aa7843bc8bf206b12000100000").unwrap();
        assert_eq!((t.span_id.as_str(), t.sampled), ("", false));
        assert!(parse_cloud_trace_context("105445aa7843bc8bf206b12000100000/x;o=1").is_none());
        assert!(parse_cloud_trace_context("short/1").is_none());
    }

    #[test]
    fn traceparent_wins() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            HeaderValue::from_static("105445aa7843bc8bf206b12000100000/1;o=1"),
        );
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap().trace_id,
            "105445aa7843bc8bf206b12000100000"
        );
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap().trace_id,
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert("traceparent", HeaderValue::from_static("garbage"));
        assert_eq!(
            TraceContext::from_headers(&headers).unwrap().trace_id,
            "105445aa7843bc8bf206b12000100000"
        );
    }
}
