//! Reading what a job writes to its stdout or stderr pipe: keep the first
//! `cap` bytes, drain and count the rest so the script never blocks on a full
//! pipe and the server's memory stays flat whatever the script prints.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::job::Captured;

/// Reads `pipe` to its end. Never fails: a read error ends the capture with
/// what was read so far (the jail is being torn down anyway).
pub async fn capture<R: AsyncRead + Unpin>(mut pipe: R, cap: usize) -> Captured {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = cap.saturating_sub(kept.len());
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    Captured {
        bytes: kept,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn keeps_everything_under_the_cap() {
        let (mut w, r) = tokio::io::duplex(16);
        let reader = tokio::spawn(capture(r, 100));
        w.write_all(b"hello\n").await.unwrap();
        drop(w);
        let got = reader.await.unwrap();
        assert_eq!(got.bytes, b"hello\n");
        assert!(!got.truncated);
    }

    #[tokio::test]
    async fn keeps_the_first_bytes_and_drains_the_rest() {
        let (mut w, r) = tokio::io::duplex(1024);
        let reader = tokio::spawn(capture(r, 10));
        // Far more than the duplex buffer: the writer only finishes if the
        // reader keeps draining past the cap.
        for _ in 0..1000 {
            w.write_all(&[b'x'; 1000]).await.unwrap();
        }
        drop(w);
        let got = reader.await.unwrap();
        assert_eq!(got.bytes, vec![b'x'; 10]);
        assert!(got.truncated);
    }

    #[tokio::test]
    async fn exactly_the_cap_is_not_truncated() {
        let (mut w, r) = tokio::io::duplex(64);
        let reader = tokio::spawn(capture(r, 4));
        w.write_all(b"abcd").await.unwrap();
        drop(w);
        let got = reader.await.unwrap();
        assert_eq!((got.bytes.as_slice(), got.truncated), (&b"abcd"[..], false));
    }
}
