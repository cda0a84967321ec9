//! Request ids: the client's `X-Request-Id` when it is safe to echo and log,
//! otherwise one we make up.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::HeaderMap;

pub const HEADER: &str = "x-request-id";

/// Longest client id we accept; longer ones are replaced, not cut, so a log
/// search for the id the client holds never finds a different one.
pub const MAX_LEN: usize = 128;

/// Accepts ids of 1–[`MAX_LEN`] characters of `[A-Za-z0-9._:-]`: enough for
/// UUIDs, ULIDs and trace ids, and nothing that could forge a log line or a
/// header.
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Makes unique ids: 32 hex digits, from a per-process random seed and a
/// counter put through a bijective mix, so no two ids of one process repeat
/// and ids of different processes are unlikely to.
pub struct RequestIds {
    seed: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            seed: random_seed(),
            counter: AtomicU64::new(0),
        }
    }

    /// The client's id if valid, else a fresh one.
    pub fn for_request(&self, headers: &HeaderMap) -> String {
        headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_valid(id))
            .map(str::to_owned)
            .unwrap_or_else(|| self.generate())
    }

    pub fn generate(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.seed, mix(self.seed ^ n))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

/// splitmix64's finalizer: a bijection on u64 that scatters the bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_ok() {
        return u64::from_le_bytes(bytes);
    }
    // No /dev/urandom: std's hasher keys are random per process too.
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn validation() {
        for ok in [
            "a",
            "req-1",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "a.b_c:d-e",
            &"x".repeat(128),
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "new\nline",
            "quote\"",
            "é",
            "a/b",
            "a;b",
            &"x".repeat(129),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_clients_id_is_kept_when_valid() {
        let ids = RequestIds::new();
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("client-42"));
        assert_eq!(ids.for_request(&headers), "client-42");

        headers.insert(HEADER, HeaderValue::from_static("bad id"));
        let replaced = ids.for_request(&headers);
        assert_ne!(replaced, "bad id");
        assert!(is_valid(&replaced));
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.generate();
            assert_eq!(id.len(), 32);
            assert!(is_valid(&id));
            assert!(seen.insert(id));
        }
    }
}
