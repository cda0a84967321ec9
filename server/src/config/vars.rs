//! The variable machinery: what a variable is ([`Var`]), how one is read with
//! its default ([`Env`]), the parsers the table's rows use, the
//! [`variables!`] macro that turns rows into the table, and [`ConfigError`],
//! the refusal `main` turns into exit 64.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::host::Host;

/// Variables whose value may hold a secret: an error about one never
/// repeats its value.
pub const SECRET_VARIABLES: &[&str] = &["PYEXEC_DATABASE_URL"];

/// One environment variable the server reads.
pub struct Var<T> {
    pub name: &'static str,
    pub default: DefaultValue<T>,
    pub meaning: &'static str,
    /// Reads a set value; the error says what a valid value looks like.
    pub parse: fn(&str) -> Result<T, String>,
}

/// What a variable is when it is unset.
pub enum DefaultValue<T> {
    /// Written as a user would write it, and read by the variable's own parser.
    Text(&'static str),
    /// Worked out at start-up from the host and other variables, read
    /// through the same [`Env`]; `shown` is how the table describes it.
    Derived {
        shown: &'static str,
        derive: fn(&Env) -> Result<T, ConfigError>,
    },
}

/// A row of the table, whatever the variable's type.
pub trait Row: Sync {
    fn name(&self) -> &'static str;
    fn default_shown(&self) -> &'static str;
    fn meaning(&self) -> &'static str;
}

impl<T> Row for Var<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_shown(&self) -> &'static str {
        match self.default {
            DefaultValue::Text(text) => text,
            DefaultValue::Derived { shown, .. } => shown,
        }
    }

    fn meaning(&self) -> &'static str {
        self.meaning
    }
}

/// Where values come from: the environment, and the host that derived
/// defaults follow.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub host: Host,
}

impl<'a> Env<'a> {
    /// `lookup` is `std::env::var(..).ok()` in production, a map in tests.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>, host: Host) -> Env<'a> {
        Env { lookup, host }
    }

    /// The variable's value, or its default. An empty value counts as unset.
    /// A derived default reads the variables it follows through here, so the
    /// table's rows may come in any order (a default that followed itself
    /// would never end: the unit tests read every default).
    pub fn read<T>(&self, var: &Var<T>) -> Result<T, ConfigError> {
        let invalid = |value: &str, expected| ConfigError::Invalid {
            name: var.name,
            value: if SECRET_VARIABLES.contains(&var.name) {
                "<redacted>".into()
            } else {
                value.to_string()
            },
            expected,
        };
        match (self.lookup)(var.name).filter(|v| !v.trim().is_empty()) {
            Some(raw) => (var.parse)(&raw).map_err(|expected| invalid(&raw, expected)),
            // A default that doesn't parse is a bug; a unit test reads them all.
            None => match var.default {
                DefaultValue::Text(text) => (var.parse)(text).map_err(|e| invalid(text, e)),
                DefaultValue::Derived { derive, .. } => derive(self),
            },
        }
    }
}

/// Declares the table. Each row becomes a `pub static` [`Var`], an entry of
/// `VARIABLES` (in the rows' order: the order of `--help` and of
/// docs/configuration.md) and a field of `Config`, read through that `Var`.
macro_rules! variables {
    ($(
        $(#[$doc:meta])*
        $field:ident: $ty:ty = $var:ident {
            name: $name:literal,
            default: $default:expr,
            meaning: $meaning:literal,
            parse: $parse:expr $(,)?
        }
    ),* $(,)?) => {
        $(
            $(#[$doc])*
            pub static $var: $crate::config::vars::Var<$ty> = $crate::config::vars::Var {
                name: $name,
                default: $default,
                meaning: $meaning,
                parse: $parse,
            };
        )*

        /// Every variable, in the order of docs/configuration.md's table.
        pub static VARIABLES: &[&dyn $crate::config::vars::Row] = &[$(&$var),*];

        /// Everything the server is configured with: one field per variable.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $(
                #[doc = $meaning]
                pub $field: $ty,
            )*
        }

        impl Config {
            /// Every variable's value, read in the table's order; the first
            /// bad one is the error.
            pub(super) fn read_all(
                env: &$crate::config::vars::Env,
            ) -> Result<Config, $crate::config::vars::ConfigError> {
                Ok(Config {
                    $($field: env.read(&$var)?,)*
                })
            }
        }
    };
}
pub(crate) use variables;

/// A configuration the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable whose value can't be used.
    Invalid {
        name: &'static str,
        value: String,
        expected: String,
    },
    /// Values that are each fine but contradict each other.
    Conflict {
        names: Vec<&'static str>,
        why: String,
    },
}

impl ConfigError {
    /// The variables at fault.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            ConfigError::Invalid { name, .. } => vec![name],
            ConfigError::Conflict { names, .. } => names.clone(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                name,
                value,
                expected,
            } => write!(
                f,
                "invalid environment variable {name}={value:?}: expected {expected}"
            ),
            ConfigError::Conflict { names, why } => {
                write!(f, "{} do not fit together: {why}", names.join(" and "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A number that `valid` accepts; else `expected`.
pub fn number<T: FromStr>(raw: &str, expected: &str, valid: fn(&T) -> bool) -> Result<T, String> {
    match raw.trim().parse::<T>() {
        Ok(value) if valid(&value) => Ok(value),
        _ => Err(expected.into()),
    }
}

/// Seconds, decimals allowed, at most a day; zero only if `zero_ok`.
pub fn seconds(raw: &str, zero_ok: bool) -> Result<Duration, String> {
    let expected = if zero_ok {
        "a number of seconds, 0 or more, e.g. 5 or 0.5"
    } else {
        "a positive number of seconds, e.g. 10 or 2.5"
    };
    // A day is far beyond any sane value; the cap keeps Duration arithmetic safe.
    let seconds: f64 = match raw.trim().parse() {
        Ok(s) if f64::is_finite(s) && s <= 86_400.0 && (s > 0.0 || (zero_ok && s == 0.0)) => s,
        _ => return Err(expected.into()),
    };
    Ok(Duration::from_secs_f64(seconds))
}

pub fn path(raw: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(raw))
}

/// A relative cgroup path that can't climb out of where it is put.
pub fn cgroup_name(raw: &str) -> Result<String, String> {
    let valid = raw.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    });
    if valid {
        Ok(raw.to_string())
    } else {
        Err("a relative cgroup path of [A-Za-z0-9._-] names, e.g. pyexec".into())
    }
}

/// One of `options`' labels, in any case.
pub fn choice<T: Copy>(raw: &str, options: &[(&str, T)]) -> Result<T, String> {
    let wanted = raw.trim().to_ascii_lowercase();
    match options.iter().find(|(label, _)| *label == wanted) {
        Some((_, value)) => Ok(*value),
        None => Err(format!(
            "one of {}",
            options
                .iter()
                .map(|(label, _)| *label)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static WIDTH: Var<u32> = Var {
        name: "TEST_WIDTH",
        default: DefaultValue::Text("3"),
        meaning: "a width",
        parse: |s| number(s, "a positive width", |n| *n > 0),
    };

    static AREA: Var<u32> = Var {
        name: "TEST_AREA",
        default: DefaultValue::Derived {
            shown: "width × CPUs",
            derive: |env| Ok(env.read(&WIDTH)? * env.host.cpus as u32),
        },
        meaning: "an area",
        parse: |s| number(s, "an area", |_| true),
    };

    fn read<T>(var: &Var<T>, vars: &[(&str, &str)]) -> Result<T, ConfigError> {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let host = Host {
            cpus: 2,
            memory_bytes: 1 << 30,
        };
        Env::new(&lookup, host).read(var)
    }

    #[test]
    fn unset_or_blank_is_the_default() {
        assert_eq!(read(&WIDTH, &[]), Ok(3));
        assert_eq!(read(&WIDTH, &[("TEST_WIDTH", "")]), Ok(3));
        assert_eq!(read(&WIDTH, &[("TEST_WIDTH", " \t")]), Ok(3));
        assert_eq!(read(&WIDTH, &[("TEST_WIDTH", " 7 ")]), Ok(7));
    }

    #[test]
    fn a_derived_default_follows_the_host_and_other_variables() {
        assert_eq!(read(&AREA, &[]), Ok(6));
        assert_eq!(read(&AREA, &[("TEST_WIDTH", "5")]), Ok(10));
        assert_eq!(read(&AREA, &[("TEST_AREA", "1")]), Ok(1));
        // A bad value it follows is that variable's error.
        let error = read(&AREA, &[("TEST_WIDTH", "0")]).unwrap_err();
        assert_eq!(error.names(), ["TEST_WIDTH"]);
    }

    #[test]
    fn errors_name_the_variables_and_the_value() {
        let error = read(&WIDTH, &[("TEST_WIDTH", "wide")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid environment variable TEST_WIDTH=\"wide\": expected a positive width"
        );
        let conflict = ConfigError::Conflict {
            names: vec!["A", "B"],
            why: "A must be below B".into(),
        };
        assert_eq!(conflict.names(), ["A", "B"]);
        assert_eq!(
            conflict.to_string(),
            "A and B do not fit together: A must be below B"
        );
    }

    #[test]
    fn parsers() {
        assert_eq!(seconds("2.5", false), Ok(Duration::from_millis(2500)));
        assert_eq!(seconds("0", true), Ok(Duration::ZERO));
        for bad in ["0", "-1", "NaN", "inf", "86401", "ten"] {
            assert!(seconds(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            cgroup_name("system.slice/pyexec").as_deref(),
            Ok("system.slice/pyexec")
        );
        for bad in ["", "/abs", "a//b", "../escape", "a/./b", "a b"] {
            assert!(cgroup_name(bad).is_err(), "{bad}");
        }
        let options = [("fork", 1), ("spawn", 2)];
        assert_eq!(choice(" Spawn ", &options), Ok(2));
        assert_eq!(choice("zygote", &options), Err("one of fork, spawn".into()));
    }
}
