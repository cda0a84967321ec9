//! Reading what a job writes to its stdout or stderr pipe: keep the first
//! `cap` bytes, drain and count the rest so the script never blocks on a full
//! pipe and the server's memory stays flat whatever the script prints.
//!
//! A capture does not wait for end-of-file to finish: nsjail holds the write
//! ends too (it passes them into the jail) and only closes them when it exits,
//! milliseconds after the job. Instead, once the job has answered or been
//! killed, [`Capture::finish`] takes whatever the pipe holds at that moment.
//! Every byte the job wrote before it answered is in the kernel's pipe buffer
//! by then, because a write to a pipe completes only once it is there.

use std::io;

use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::job::Captured;

const CHUNK: usize = 64 * 1024;

/// A pipe being read in the background.
pub struct Capture {
    finish: Option<oneshot::Sender<()>>,
    task: JoinHandle<Captured>,
}

impl Capture {
    /// Starts reading `pipe`, keeping at most `cap` bytes.
    pub fn start(pipe: pipe::Receiver, cap: usize) -> Capture {
        let (finish, finished) = oneshot::channel();
        Capture {
            finish: Some(finish),
            task: tokio::spawn(read(pipe, cap, finished)),
        }
    }

    /// Takes what the pipe holds now, on top of what was read so far.
    pub async fn finish(mut self) -> Captured {
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(());
        }
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read(pipe: pipe::Receiver, cap: usize, mut finished: oneshot::Receiver<()>) -> Captured {
    let mut out = Captured::default();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            ready = pipe.readable() => {
                if ready.is_err() || drain(|buf| pipe.try_read(buf), &mut chunk, cap, &mut out) {
                    break;
                }
            }
            _ = &mut finished => {
                // Straight to the kernel: tokio's `try_read` answers WouldBlock
                // without a syscall until its reactor has seen the pipe ready,
                // which may not have happened yet for the last bytes.
                drain(|buf| read_now(&pipe, buf), &mut chunk, cap, &mut out);
                break;
            }
        }
    }
    out
}

fn read_now(pipe: &pipe::Receiver, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(pipe, buf).map_err(io::Error::from)
}

/// Reads what is available without waiting. Returns true at end-of-file or
/// on an error (the jail is being torn down: what we have is all there is).
fn drain(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    chunk: &mut [u8],
    cap: usize,
    out: &mut Captured,
) -> bool {
    loop {
        match read(chunk) {
            Ok(0) => return true,
            Ok(n) => {
                let room = cap.saturating_sub(out.bytes.len());
                out.truncated |= n > room;
                out.bytes.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    fn pipe_pair() -> (pipe::Receiver, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (pipe::Receiver::from_owned_fd(r).unwrap(), File::from(w))
    }

    #[tokio::test]
    async fn finish_takes_what_was_written_without_waiting_for_eof() {
        let (r, mut w) = pipe_pair();
        let capture = Capture::start(r, 100);
        w.write_all(b"hello\n").unwrap();
        // `w` stays open, as nsjail's copy does.
        let got = capture.finish().await;
        assert_eq!(got.bytes, b"hello\n");
        assert!(!got.truncated);
        drop(w);
    }

    #[tokio::test]
    async fn keeps_the_first_bytes_and_drains_the_rest() {
        let (r, mut w) = pipe_pair();
        let capture = Capture::start(r, 10);
        // Far more than a pipe buffer: the writer only gets through if the
        // capture keeps draining past the cap.
        let writer = std::thread::spawn(move || {
            for _ in 0..1000 {
                w.write_all(&[b'x'; 1000]).unwrap();
            }
        });
        tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        let got = capture.finish().await;
        assert_eq!(got.bytes, vec![b'x'; 10]);
        assert!(got.truncated);
    }

    #[tokio::test]
    async fn exactly_the_cap_is_not_truncated() {
        let (r, mut w) = pipe_pair();
        let capture = Capture::start(r, 4);
        w.write_all(b"abcd").unwrap();
        drop(w);
        let got = capture.finish().await;
        assert_eq!((got.bytes.as_slice(), got.truncated), (&b"abcd"[..], false));
    }
}
