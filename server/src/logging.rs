//! Log lines on stdout: one JSON object per line in the shape Cloud Logging
//! reads (`severity`, `message`, `time`, then fields), or `text` for a
//! terminal. Fields of the spans an event happens in come first, so the
//! request id (and trace) set on a request's span is on every line about it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Span fields renamed to the keys Cloud Logging links traces by.
const CLOUD_KEYS: &[(&str, &str)] = &[
    ("trace", "logging.googleapis.com/trace"),
    ("span_id", "logging.googleapis.com/spanId"),
    ("trace_sampled", "logging.googleapis.com/trace_sampled"),
];

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(
    level: Level,
    format: LogFormat,
) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::from_level(level))
        .with(LogLayer::new(format, Sink::Stdout));
    tracing::subscriber::set_global_default(subscriber)
}

/// Where finished lines go.
#[derive(Clone)]
pub enum Sink {
    Stdout,
    /// Lines collected in memory, for tests.
    Buffer(Arc<Mutex<Vec<u8>>>),
}

pub struct LogLayer {
    format: LogFormat,
    sink: Sink,
}

impl LogLayer {
    pub fn new(format: LogFormat, sink: Sink) -> Self {
        LogLayer { format, sink }
    }

    fn write(&self, line: &str) {
        // A write error (stdout closed) must never take a request down with it.
        match &self.sink {
            Sink::Stdout => {
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            Sink::Buffer(buffer) => {
                if let Ok(mut buffer) = buffer.lock() {
                    buffer.extend_from_slice(line.as_bytes());
                }
            }
        }
    }
}

/// The fields recorded on a span, kept in its extensions.
struct SpanFields(Fields);

/// Named values in the order they were recorded.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    fn set(&mut self, name: &'static str, value: Value) {
        if name == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if let Some(slot) = self.values.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            self.values.push((name, value));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::from(value.to_string()), Value::Number);
        self.set(field.name(), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    for (name, value) in &span_fields.values {
                        fields.set(name, value.clone());
                    }
                }
            }
        }
        event.record(&mut fields);
        let line = match self.format {
            LogFormat::Json => json_line(*event.metadata().level(), SystemTime::now(), &fields),
            LogFormat::Text => text_line(*event.metadata().level(), SystemTime::now(), &fields),
        };
        self.write(&line);
    }
}

fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        // Cloud Logging has no TRACE severity.
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

fn json_line(level: Level, time: SystemTime, fields: &Fields) -> String {
    let quote = |s: &str| Value::from(s).to_string();
    let mut line = format!(
        "{{\"severity\":\"{}\",\"message\":{},\"time\":\"{}\"",
        severity(level),
        quote(fields.message.as_deref().unwrap_or("")),
        rfc3339(time)
    );
    for (name, value) in &fields.values {
        let key = CLOUD_KEYS
            .iter()
            .find(|(short, _)| short == name)
            .map_or(*name, |(_, long)| long);
        let _ = write!(line, ",{}:{}", quote(key), value);
    }
    line.push_str("}\n");
    line
}

fn text_line(level: Level, time: SystemTime, fields: &Fields) -> String {
    let mut line = format!(
        "{} {:<7} {}",
        rfc3339(time),
        severity(level),
        fields.message.as_deref().unwrap_or("")
    );
    for (name, value) in &fields.values {
        match value {
            Value::String(s)
                if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"') =>
            {
                let _ = write!(line, " {name}={s}");
            }
            other => {
                let _ = write!(line, " {name}={other}");
            }
        }
    }
    line.push('\n');
    line
}

/// `2024-05-01T12:34:56.123456Z`. Written here to avoid a date crate for one
/// format: days since the epoch to a civil date (Howard Hinnant's algorithm).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// (year, month, day) of the day `days` after 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's days-to-civil algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(LogLayer::new(format, Sink::Buffer(buffer.clone())));
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_have_the_cloud_logging_shape() {
        let out = capture(LogFormat::Json, || {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                trace = tracing::field::Empty,
                span_id = tracing::field::Empty
            );
            span.record("trace", "projects/p/traces/abc");
            span.record("span_id", "00f067aa0ba902b7");
            let _guard = span.enter();
            tracing::info!(
                outcome = "ok",
                run_ms = 1.5,
                worker_id = 7u64,
                "job \"finished\""
            );
            tracing::debug!("filtered out");
            tracing::warn!(reason = %"spawn failed", "worker problem");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["severity"], "INFO");
        assert_eq!(first["message"], "job \"finished\"");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(first["request_id"], "r-1");
        assert_eq!(
            first["logging.googleapis.com/trace"],
            "projects/p/traces/abc"
        );
        assert_eq!(first["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        assert_eq!(first["outcome"], "ok");
        assert_eq!(first["run_ms"], 1.5);
        assert_eq!(first["worker_id"], 7);
        assert!(lines[0].starts_with("{\"severity\":\"INFO\",\"message\":"));
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["severity"], "WARNING");
        assert_eq!(second["reason"], "spawn failed");
        assert_eq!(second["request_id"], "r-1");
    }

    #[test]
    fn text_lines_read_well() {
        let out = capture(LogFormat::Text, || {
            tracing::info!(port = 8080u64, path = "a b", "listening");
        });
        assert!(
            out.ends_with(" INFO    listening port=8080 path=\"a b\"\n"),
            "{out}"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_210_096_123_456);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // leap day of a century year
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000Z");
    }
}
