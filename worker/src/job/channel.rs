//! The server's end of one job process: its job socket (length-delimited
//! JSON frames, [`super::codec`]) and the capture of its stdout and stderr
//! pipes ([`super::capture`]). The same in both isolation modes; only who
//! hands the other ends to the job process differs (nsjail's `--pass_fd`, or
//! the zygote over SCM_RIGHTS).
//!
//! ```text
//!  server                          job process
//!  JobChannel ── socket ─────────▶ fd 3   ready ▶ · ◀ job · result ▶
//!             ◀─ stdout pipe ───── fd 4   (on fd 1 once the job starts)
//!             ◀─ stderr pipe ───── fd 5   (on fd 2 once the job starts)
//! ```
//!
//! SO_PASSCRED is set on the server's end before the other end leaves the
//! server, so the kernel stamps the ready frame with the sender's pid as
//! seen from the server's pid namespace: that is how the server learns the
//! host pid of a job process it did not fork itself.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};

use bytes::BytesMut;
use nix::fcntl::OFlag;
use nix::sys::socket::{
    recvmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixCredentials,
};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio_util::codec::Decoder;

use super::capture::Capture;
use super::codec::{read_message, write_message, FrameError, JsonCodec};
use super::protocol::{FromRunner, ScriptErrorKind, ToRunner, Versions};
use super::protocol::{MAX_FILE_NAME_BYTES, MAX_OMITTED_LISTED};
use super::{Captured, FileCaps, Job, JobFailure, JobResult};
use crate::error::{HandshakeError, ProtocolViolation, SandboxFault};

/// Room in a frame beyond the result itself (the envelope, an error's traceback).
pub const FRAME_OVERHEAD: u64 = 1 << 20;
/// Room per listed file beyond its content: its name (at most
/// `MAX_FILE_NAME_BYTES`, each byte at worst a 6-byte JSON escape), size,
/// media type and the keys.
const FILE_ENTRY_ROOM: u64 = (MAX_FILE_NAME_BYTES as u64) * 6 + 512;

/// The largest answer frame a job may send: its result, its output files
/// (base64: 4 bytes per 3), their entries and the omitted names, and the
/// envelope.
pub fn max_answer_frame(max_result_bytes: u64, caps: FileCaps) -> u64 {
    let base64 = caps.max_bytes.div_ceil(3) * 4;
    let entries = (u64::from(caps.max_files) + MAX_OMITTED_LISTED as u64) * FILE_ENTRY_ROOM;
    max_result_bytes
        .saturating_add(FRAME_OVERHEAD)
        .saturating_add(base64)
        .saturating_add(entries)
}
/// Bytes read from the job socket per system call.
const READ_CHUNK: usize = 64 * 1024;

/// What the job process's ends of the channel are, before they are handed over.
pub struct JobEnds {
    pub socket: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A job process that reported ready.
#[derive(Debug, Clone)]
pub struct Ready {
    pub versions: Versions,
    /// The sender of the ready frame, in the server's pid namespace.
    pub host_pid: i32,
}

/// How a job's answer failed to arrive.
#[derive(Debug)]
pub enum RunError {
    /// The job process failed, as the runner or the framing tells.
    Failed(JobFailure),
    /// The socket closed without an answer: the process ended. Why it ended
    /// is for the caller to find out (its exit status, the OOM counter).
    Ended,
}

pub struct JobChannel {
    socket: UnixStream,
    read_buffer: BytesMut,
    from_runner: JsonCodec<FromRunner>,
    to_runner: JsonCodec<ToRunner>,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
}

impl JobChannel {
    /// Makes the socket pair and the two pipes, starts capturing the pipes
    /// (each capped at `max_output_bytes`), and returns the ends the job
    /// process gets. Answers longer than `max_answer_frame` bytes are refused.
    /// Every descriptor is close-on-exec: a jail spawned at the same moment
    /// must not inherit another job's ends.
    pub fn new(
        max_answer_frame: u64,
        max_output_bytes: usize,
    ) -> io::Result<(JobChannel, JobEnds)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        setsockopt(&ours, sockopt::PassCred, &true)?;
        let (stdout_read, stdout_write) = pipe2(OFlag::O_CLOEXEC)?;
        let (stderr_read, stderr_write) = pipe2(OFlag::O_CLOEXEC)?;
        let socket = std::os::unix::net::UnixStream::from(ours);
        socket.set_nonblocking(true)?;
        let channel = JobChannel {
            socket: UnixStream::from_std(socket)?,
            read_buffer: BytesMut::new(),
            from_runner: JsonCodec::new(usize::try_from(max_answer_frame).unwrap_or(usize::MAX)),
            to_runner: JsonCodec::new(usize::MAX),
            stdout: Some(Capture::start(
                pipe::Receiver::from_owned_fd(stdout_read)?,
                max_output_bytes,
            )),
            stderr: Some(Capture::start(
                pipe::Receiver::from_owned_fd(stderr_read)?,
                max_output_bytes,
            )),
        };
        let ends = JobEnds {
            socket: theirs,
            stdout: stdout_write,
            stderr: stderr_write,
        };
        Ok((channel, ends))
    }

    /// Waits for the ready frame and the credentials it came with.
    ///
    /// Cancel safety: safe to drop; the channel is then only fit to be closed.
    pub async fn wait_ready(&mut self) -> Result<Ready, HandshakeError> {
        let mut sender = None;
        loop {
            match self.from_runner.decode(&mut self.read_buffer) {
                Ok(Some(FromRunner::Ready(versions))) => {
                    return match sender {
                        Some(host_pid) if host_pid > 0 => Ok(Ready { versions, host_pid }),
                        _ => Err(HandshakeError::NoCredentials),
                    }
                }
                Ok(Some(FromRunner::Error(error))) => {
                    return Err(HandshakeError::RunnerFailed(error.message))
                }
                Ok(Some(FromRunner::Result { .. })) => {
                    return Err(HandshakeError::ResultBeforeReady)
                }
                Ok(None) => {}
                Err(e) => return Err(HandshakeError::Unreadable(e)),
            }
            let (read, credentials) = self
                .receive_with_credentials()
                .await
                .map_err(HandshakeError::Socket)?;
            if read == 0 {
                return Err(HandshakeError::Closed);
            }
            if sender.is_none() {
                sender = credentials.map(|c| c.pid());
            }
        }
    }

    async fn receive_with_credentials(&mut self) -> io::Result<(usize, Option<UnixCredentials>)> {
        let mut chunk = vec![0u8; READ_CHUNK];
        let fd = self.socket.as_raw_fd();
        let (read, credentials) = self
            .socket
            .async_io(Interest::READABLE, || {
                let mut space = nix::cmsg_space!(UnixCredentials);
                let mut iov = [IoSliceMut::new(&mut chunk)];
                let message =
                    recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
                        .map_err(io::Error::from)?;
                let credentials = message.cmsgs().ok().and_then(|mut cmsgs| {
                    cmsgs.find_map(|cmsg| match cmsg {
                        ControlMessageOwned::ScmCredentials(c) => Some(c),
                        _ => None,
                    })
                });
                Ok((message.bytes, credentials))
            })
            .await?;
        self.read_buffer.extend_from_slice(&chunk[..read]);
        Ok((read, credentials))
    }

    /// Sends the job and waits for its one answer. No deadline here: the
    /// pool imposes it.
    ///
    /// Cancel safety: safe to drop; the channel is then only fit to be closed.
    pub async fn run(&mut self, job: &Job) -> Result<JobResult, RunError> {
        let message = ToRunner::of(job);
        if let Err(e) = write_message(&mut self.socket, &mut self.to_runner, &message).await {
            return Err(RunError::Failed(JobFailure::Sandbox(SandboxFault::Send(e))));
        }
        let answer = read_message(
            &mut self.socket,
            &mut self.from_runner,
            &mut self.read_buffer,
        )
        .await;
        match answer {
            Ok(FromRunner::Result { result, files }) => Ok(JobResult { result, files }),
            Ok(FromRunner::Error(error)) if error.kind == ScriptErrorKind::Internal => Err(
                RunError::Failed(JobFailure::Sandbox(SandboxFault::Runner(error.message))),
            ),
            Ok(FromRunner::Error(error)) => Err(RunError::Failed(JobFailure::Script(error))),
            Ok(FromRunner::Ready(_)) => Err(RunError::Failed(JobFailure::Protocol(
                ProtocolViolation::SecondReady,
            ))),
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => Err(RunError::Ended),
            Err(FrameError::TooLarge { limit }) => Err(RunError::Failed(JobFailure::Protocol(
                ProtocolViolation::FrameTooLarge { limit },
            ))),
            Err(FrameError::Malformed(why)) => Err(RunError::Failed(JobFailure::Protocol(
                ProtocolViolation::Malformed(why),
            ))),
        }
    }

    /// What the job wrote to stdout and stderr up to now; call once the job
    /// process has been stopped or has answered.
    pub async fn output(&mut self) -> (Captured, Captured) {
        let stdout = match self.stdout.take() {
            Some(capture) => capture.finish().await,
            None => Captured::default(),
        };
        let stderr = match self.stderr.take() {
            Some(capture) => capture.finish().await,
            None => Captured::default(),
        };
        (stdout, stderr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn limits() -> crate::job::JobLimits {
        crate::job::JobLimits {
            timeout: std::time::Duration::from_secs(1),
            memory_bytes: 1 << 28,
        }
    }

    #[test]
    fn the_answer_frame_has_room_for_every_file() {
        let caps = FileCaps {
            max_files: 32,
            max_bytes: 4 << 20,
        };
        let frame = max_answer_frame(10 << 20, caps);
        // 4 MiB of base64 alone is 5.33 MiB.
        assert!(frame >= (10 << 20) + FRAME_OVERHEAD + (4 << 20) * 4 / 3 + 132 * 6 * 1024);
        let none = FileCaps {
            max_files: 0,
            max_bytes: 0,
        };
        assert_eq!(
            max_answer_frame(0, none),
            FRAME_OVERHEAD + MAX_OMITTED_LISTED as u64 * FILE_ENTRY_ROOM
        );
    }

    fn frame(body: &str) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body.as_bytes());
        out
    }

    #[tokio::test]
    async fn the_ready_frame_names_its_sender_and_a_job_round_trips() {
        let (mut channel, ends) = JobChannel::new(1 << 20, 1024).unwrap();
        let mut theirs = std::os::unix::net::UnixStream::from(ends.socket);
        let mut stdout = std::fs::File::from(ends.stdout);
        let process = std::thread::spawn(move || {
            theirs
                .write_all(&frame(
                    r#"{"type":"ready","python":"3","numpy":"2","pandas":"2"}"#,
                ))
                .unwrap();
            let mut header = [0u8; 4];
            theirs.read_exact(&mut header).unwrap();
            let mut job = vec![0u8; u32::from_be_bytes(header) as usize];
            theirs.read_exact(&mut job).unwrap();
            stdout.write_all(b"printed\n").unwrap();
            theirs
                .write_all(&frame(r#"{"type":"result","result":{"n":1}}"#))
                .unwrap();
            String::from_utf8(job).unwrap()
        });
        let ready = channel.wait_ready().await.unwrap();
        assert_eq!(ready.host_pid, std::process::id() as i32);
        assert_eq!(ready.versions.numpy, "2");
        let job = Job::new("def main(): ...", limits(), 100);
        let result = channel.run(&job).await.unwrap();
        assert_eq!(result.result.get(), r#"{"n":1}"#);
        assert!(result.files.files.is_empty() && !result.files.truncated);
        assert!(process.join().unwrap().contains("def main(): ..."));
        let (stdout, stderr) = channel.output().await;
        assert_eq!(stdout.bytes, b"printed\n");
        assert!(stderr.bytes.is_empty());
    }

    #[tokio::test]
    async fn a_process_that_dies_before_ready_is_an_error_not_a_hang() {
        let (mut channel, ends) = JobChannel::new(1 << 20, 1024).unwrap();
        drop(ends);
        let error = channel.wait_ready().await.unwrap_err();
        assert!(matches!(error, HandshakeError::Closed), "{error:?}");
    }

    #[tokio::test]
    async fn an_error_frame_instead_of_ready_says_why() {
        let (mut channel, ends) = JobChannel::new(1 << 20, 1024).unwrap();
        let mut theirs = std::os::unix::net::UnixStream::from(ends.socket);
        theirs
            .write_all(&frame(
                r#"{"type":"error","kind":"internal","message":"no sandbox","line":null,"traceback":null}"#,
            ))
            .unwrap();
        let error = channel.wait_ready().await.unwrap_err();
        assert!(
            matches!(&error, HandshakeError::RunnerFailed(why) if why == "no sandbox"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_answer_is_a_protocol_violation_read_no_further() {
        let (mut channel, ends) = JobChannel::new(100, 1024).unwrap();
        let mut theirs = std::os::unix::net::UnixStream::from(ends.socket);
        theirs
            .write_all(&frame(
                r#"{"type":"ready","python":"3","numpy":"2","pandas":"2"}"#,
            ))
            .unwrap();
        channel.wait_ready().await.unwrap();
        theirs.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let job = Job::new("x", limits(), 100);
        match channel.run(&job).await {
            Err(RunError::Failed(JobFailure::Protocol(ProtocolViolation::FrameTooLarge {
                limit,
            }))) => assert_eq!(limit, 100),
            other => panic!("{other:?}"),
        }
    }
}
