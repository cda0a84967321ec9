//! The Postgres connection string, in libpq's URL or key/value form.
//!
//! tokio-postgres reads both forms but knows neither `sslrootcert` nor the
//! `verify-ca`/`verify-full` TLS modes: those are taken out here and the rest
//! is handed over. Also makes the redacted location used in logs, errors and
//! `Debug` (user, hosts, database; never the password).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::Host;

use crate::error::StoreError;

/// Passwords shorter than this are not scrubbed from text: they would match
/// inside ordinary words and garble it, and protect nothing anyway.
pub(crate) const MIN_SCRUBBED_LEN: usize = 4;

/// libpq's `sslmode`, with its meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain text.
    Disable,
    /// TLS if the server offers it, certificate unchecked (libpq's default).
    Prefer,
    /// TLS, certificate unchecked, unless `sslrootcert` is given: then as
    /// `VerifyCa`.
    Require,
    /// TLS, certificate chained to a trusted CA; any host name.
    VerifyCa,
    /// TLS, certificate chained to a trusted CA and naming the host.
    VerifyFull,
}

pub(crate) struct ConnInfo {
    pub config: tokio_postgres::Config,
    pub tls: TlsMode,
    /// The CA file to trust (`sslrootcert`); else the system's roots.
    pub root_cert: Option<PathBuf>,
    /// Where the database is, without secrets.
    pub location: String,
    /// Kept only to scrub it from any error text.
    pub password: Option<String>,
}

/// `text` read into a config. `Invalid` for a malformed string (the error
/// never quotes values).
pub(crate) fn parse(text: &str) -> Result<ConnInfo, StoreError> {
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<Option<String>, StoreError> {
        match key {
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(None)
            }
            "sslmode" => {
                tls = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    _ => {
                        return Err(StoreError::Invalid(
                            "sslmode is one of disable, allow, prefer, require, verify-ca, \
                             verify-full"
                                .into(),
                        ))
                    }
                };
                let understood = match tls {
                    TlsMode::Disable => "disable",
                    TlsMode::Prefer => "prefer",
                    _ => "require",
                };
                Ok(Some(understood.to_string()))
            }
            _ => Ok(Some(value.to_string())),
        }
    };
    let rewritten = match url_rest(text) {
        Some((scheme_and_authority, query)) => {
            let mut out = scheme_and_authority.to_string();
            let mut first = true;
            for param in query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|p| !p.is_empty())
            {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                let decoded_key = percent_decode(key)?;
                if let Some(value) = take(&decoded_key, &percent_decode(value)?)? {
                    out.push(if first { '?' } else { '&' });
                    first = false;
                    write!(
                        out,
                        "{}={}",
                        percent_encode(&decoded_key),
                        percent_encode(&value)
                    )
                    .ok();
                }
            }
            out
        }
        None => {
            let mut out = String::new();
            for (key, value) in key_values(text)? {
                if let Some(value) = take(&key, &value)? {
                    let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                    write!(out, "{key}='{quoted}' ").ok();
                }
            }
            out
        }
    };
    let config = tokio_postgres::Config::from_str(&rewritten).map_err(|e| {
        // tokio-postgres's causes name the option, never its value.
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        StoreError::Invalid(format!(
            "the database connection string is malformed{cause}"
        ))
    })?;
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .filter(|p| !p.is_empty());
    let mut location = location(&config);
    if let Some(p) = password.as_deref().filter(|p| p.len() >= MIN_SCRUBBED_LEN) {
        location = location.replace(p, "<redacted>");
    }
    Ok(ConnInfo {
        location,
        config,
        tls,
        root_cert,
        password,
    })
}

/// The location in `text`, for `Debug` and logs; a malformed string shows
/// as such (it may be malformed around its password).
pub(crate) fn redacted(text: &str) -> String {
    match parse(text) {
        Ok(info) => info.location,
        Err(_) => "<malformed connection string, not shown>".to_string(),
    }
}

/// `postgres://user@host:port,…/dbname`, hosts that are Unix socket
/// directories shown as their path.
fn location(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// For a URL, the part before the query and the query; `None` for a
/// key/value string. Mirrors tokio-postgres, which reads everything up to
/// the first `@` as credentials (a `?` in a password stays there).
fn url_rest(text: &str) -> Option<(&str, Option<&str>)> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))?;
    let scheme_len = text.len() - rest.len();
    let after_credentials = rest.find('@').map_or(0, |at| at + 1);
    match rest[after_credentials..].find('?') {
        Some(q) => {
            let split = scheme_len + after_credentials + q;
            Some((&text[..split], Some(&text[split + 1..])))
        }
        None => Some((text, None)),
    }
}

/// libpq's key/value pairs: `key = value`, values either bare or in single
/// quotes, `\` escaping the next character.
fn key_values(text: &str) -> Result<Vec<(String, String)>, StoreError> {
    let malformed = || StoreError::Invalid("the database connection string is malformed".into());
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err(malformed());
            }
            return Ok(pairs);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(malformed());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(malformed()),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(malformed)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(malformed)?);
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(malformed());
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(text: &str) -> Result<String, StoreError> {
    let malformed = || StoreError::Invalid("the database URL has a malformed %-escape".into());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| malformed())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| malformed())
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").ok();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_keeps_what_tokio_postgres_reads_and_takes_the_tls_settings() {
        let info = parse(
            "postgres://app:s3cr%3Ft@db.example:6543/pyexec?sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20dir%2Froot.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(info.tls, TlsMode::VerifyFull);
        assert_eq!(info.root_cert, Some(PathBuf::from("/etc/ca dir/root.pem")));
        assert_eq!(info.config.get_application_name(), Some("x"));
        assert_eq!(
            info.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(info.password.as_deref(), Some("s3cr?t"));
        assert_eq!(info.location, "postgres://app@db.example:6543/pyexec");
    }

    #[test]
    fn key_value_form_with_quotes_and_a_cloud_sql_socket() {
        let info = parse(
            "host=/cloudsql/proj:europe-west1:inst user=pyexec password='it''s \\'q\\' x' \
             dbname = pyexec sslmode=disable",
        );
        // libpq doubles no quotes: '' ends the value, so this is malformed.
        assert!(info.is_err());
        let info = parse(
            "host=/cloudsql/proj:europe-west1:inst user=pyexec password='it\\'s a \\\\ x' \
             dbname = pyexec sslmode=disable",
        )
        .unwrap();
        assert_eq!(info.tls, TlsMode::Disable);
        assert_eq!(info.password.as_deref(), Some("it's a \\ x"));
        assert_eq!(
            info.config.get_hosts(),
            [Host::Unix(PathBuf::from(
                "/cloudsql/proj:europe-west1:inst"
            ))]
        );
        assert_eq!(
            info.location,
            "postgres://pyexec@/cloudsql/proj:europe-west1:inst:5432/pyexec"
        );
    }

    #[test]
    fn tls_defaults_to_prefer_and_require_is_understood() {
        assert_eq!(parse("postgres://u@h/d").unwrap().tls, TlsMode::Prefer);
        assert_eq!(
            parse("postgresql://u@h/d?sslmode=require").unwrap().tls,
            TlsMode::Require
        );
        assert_eq!(
            parse("host=h sslmode=verify-ca").unwrap().tls,
            TlsMode::VerifyCa
        );
    }

    #[test]
    fn malformed_strings_are_invalid_without_quoting_them() {
        for bad in [
            "postgres://u:hunter2@h/d?sslmode=sometimes",
            "postgres://u:hunter2@h/d?port=notaport",
            "postgres://u:hunter2@h/d?bogus=1",
            "host=h password='hunter2",
            "host=h password=hunter2 =x",
            "postgres://u:hunter2@h/d?sslrootcert=%zz",
        ] {
            match parse(bad) {
                Err(StoreError::Invalid(why)) => assert!(!why.contains("hunter2"), "{why}"),
                other => panic!("{bad}: {:?}", other.map(|i| i.location)),
            }
            assert!(!redacted(bad).contains("hunter2"));
        }
    }

    #[test]
    fn redacted_never_shows_the_password() {
        for text in [
            "postgres://app:hunter2@h:5432/d",
            "postgres://app@h/d?password=hunter2",
            "host=h user=app password=hunter2 dbname=d",
        ] {
            let shown = redacted(text);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app@h"), "{shown}");
        }
    }
}
