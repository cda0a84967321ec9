//! The versioned schema: one numbered SQL file per version and dialect in
//! `store/migrations/{sqlite,postgres}/`, embedded in the binary and applied
//! in order at open; each applied version is a row of `schema_migrations`.
//!
//! Migrations only add (tables, columns, indexes): a database written by
//! this version opens with every later one. A database whose version is
//! beyond [`SCHEMA_VERSION`] is refused ([`StoreError::SchemaTooNew`]).

use crate::error::StoreError;

/// One schema version in one dialect.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 1;

pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/sqlite/0001_init.sql"),
}];

pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/postgres/0001_init.sql"),
}];

/// The table of applied versions, the same in both dialects (created before
/// any migration, so not part of one).
pub(crate) const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// The migrations to apply to a database at version `found` (0 for a new
/// one); `SchemaTooNew` if it is beyond what this build knows.
pub(crate) fn pending(
    found: i64,
    all: &'static [Migration],
) -> Result<&'static [Migration], StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Corrupt(format!(
            "schema_migrations holds version {found}"
        )));
    }
    Ok(&all[found as usize..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_dialects_have_the_same_numbered_versions_up_to_the_known_one() {
        for (dialect, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let expected: Vec<String> = list
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.name))
                .collect();
            assert_eq!(
                files(dialect),
                expected,
                "{dialect}: every file embedded, in order"
            );
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{dialect}: versions are 1, 2, 3…");
            }
            assert_eq!(list.len() as i64, SCHEMA_VERSION, "{dialect}");
        }
        let names = |list: &[Migration]| list.iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }

    #[test]
    fn pending_is_what_comes_after_the_found_version() {
        assert_eq!(pending(0, SQLITE).unwrap().len(), SQLITE.len());
        assert!(pending(SCHEMA_VERSION, SQLITE).unwrap().is_empty());
        assert_eq!(
            pending(SCHEMA_VERSION + 1, SQLITE).err(),
            Some(StoreError::SchemaTooNew {
                found: SCHEMA_VERSION + 1,
                known: SCHEMA_VERSION
            })
        );
        assert!(matches!(pending(-1, SQLITE), Err(StoreError::Corrupt(_))));
    }
}
