//! The server's side of a zygote's control socket (the messages are in
//! [`super::protocol`]): asking for children, and a reader task that answers
//! each pending fork and announces each child's end.
//!
//! ```text
//!  fork(id, job ends) ──{"type":"fork"} + SCM_RIGHTS──▶ zygote
//!                     ◀──{"type":"forked","pid":P}────── (P: pid in the jail)
//!  reader task        ◀──{"type":"exited","pid":P,…}──── when the zygote reaps P
//! ```
//!
//! When the socket closes (the zygote died, or was killed), every pending
//! fork fails and every child's exit watch says the zygote is gone: its
//! children died with it, because the zygote is PID 1 of the jail's pid
//! namespace. A zygote that sends what the protocol doesn't allow is cut
//! off the same way.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixCredentials,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch, Notify};

use super::protocol::{describe_exit, FromZygote, ToZygote};
use crate::error::{ForkError, ZygoteNotReady};
use crate::job::channel::JobEnds;
use crate::job::protocol::Versions;

/// Largest control message; the zygote's are a few dozen bytes.
const MAX_MESSAGE: usize = 64 * 1024;

/// How a job child ended, as its zygote saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildExit {
    /// Reaped by the zygote: "exit status 0", "killed by signal 9 (SIGKILL)".
    Status(String),
    /// The zygote itself ended; its children died with it.
    ZygoteGone,
}

/// Where a child's end will be announced.
pub type ExitWatch = watch::Receiver<Option<ChildExit>>;

/// A child the zygote forked for a job.
pub struct Forked {
    /// Its pid in the zygote's (the jail's) pid namespace.
    pub jail_pid: i32,
    pub exit: ExitWatch,
}

/// One zygote's control socket. Cheap to share: the reader task holds only
/// its [`Shared`] part, never the zygote, so it can't keep a zygote alive.
pub struct Control {
    shared: Arc<Shared>,
}

struct Shared {
    socket: AsyncFd<OwnedFd>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Forked, ForkError>>>>,
    exits: Mutex<HashMap<i32, watch::Sender<Option<ChildExit>>>>,
    alive: AtomicBool,
    /// Woken when the zygote dies.
    died: Notify,
}

/// The two ends of a new control socket: ours (non-blocking, passing
/// credentials) and the zygote's (blocking).
pub fn control_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    nix::fcntl::fcntl(
        &theirs,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )?;
    setsockopt(&ours, sockopt::PassCred, &true)?;
    Ok((ours, theirs))
}

impl Control {
    /// Watches our end of the control socket. Must be called inside a tokio
    /// runtime.
    pub fn new(ours: OwnedFd) -> io::Result<Control> {
        // SAFETY: `ours` is an OwnedFd that moves into the AsyncFd, so the
        // descriptor stays open exactly as long as the registration.
        let socket = unsafe { AsyncFd::register(ours)? };
        Ok(Control {
            shared: Arc::new(Shared {
                socket,
                pending: Mutex::default(),
                exits: Mutex::default(),
                alive: AtomicBool::new(false),
                died: Notify::new(),
            }),
        })
    }

    /// Waits for the zygote's first message, its ready message, and returns
    /// what it reported with its host pid (from the message's credentials).
    ///
    /// Cancel safety: safe to drop; the zygote is then only fit to be ended.
    pub async fn wait_ready(&self) -> Result<(Versions, i32), ZygoteNotReady> {
        let (bytes, credentials) = receive(&self.shared.socket)
            .await
            .map_err(ZygoteNotReady::Socket)?;
        if bytes.is_empty() {
            return Err(ZygoteNotReady::Closed);
        }
        let host_pid = credentials
            .map(|c| c.pid())
            .filter(|&p| p > 0)
            .ok_or(ZygoteNotReady::NoCredentials)?;
        match serde_json::from_slice(&bytes) {
            Ok(FromZygote::Ready(versions)) => Ok((versions, host_pid)),
            Ok(_) => Err(ZygoteNotReady::UnexpectedMessage),
            Err(e) => Err(ZygoteNotReady::Unreadable(e)),
        }
    }

    /// Starts the reader task: from now on forks can be asked for.
    pub fn start(&self) {
        self.shared.alive.store(true, Ordering::SeqCst);
        tokio::spawn(read(self.shared.clone()));
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Completes when the zygote has died (at once if it already has).
    pub async fn died(&self) {
        let notified = self.shared.died.notified();
        if self.is_alive() {
            notified.await;
        }
    }

    /// Asks for one job child holding `ends`. The child then sends its ready
    /// frame on the job socket by itself.
    ///
    /// Cancel safety: safe to drop. A child forked for a request that was
    /// dropped finds its job socket closed and exits.
    pub async fn fork(&self, id: u64, ends: JobEnds) -> Result<Forked, ForkError> {
        let (reply, answer) = oneshot::channel();
        let pending = PendingFork {
            id,
            shared: &self.shared,
        };
        lock(&self.shared.pending).insert(id, reply);
        if !self.is_alive() {
            return Err(ForkError::ZygoteEnded);
        }
        let message =
            serde_json::to_vec(&ToZygote::Fork { id }).expect("a fork request always encodes");
        let fds = [
            ends.socket.as_raw_fd(),
            ends.stdout.as_raw_fd(),
            ends.stderr.as_raw_fd(),
        ];
        send(&self.shared.socket, &message, &fds)
            .await
            .map_err(ForkError::Send)?;
        // The zygote holds copies now; the child will hold the only ones.
        drop(ends);
        let forked = answer.await.unwrap_or(Err(ForkError::ZygoteEnded));
        drop(pending);
        forked
    }

    /// Stops talking to the zygote: it exits once its control socket closes.
    pub fn shut_down(&self) {
        let _ = nix::sys::socket::shutdown(
            self.shared.socket.as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
    }
}

/// Removes a fork's entry from the pending table however `fork` ends.
struct PendingFork<'a> {
    id: u64,
    shared: &'a Shared,
}

impl Drop for PendingFork<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

/// The reader task: dispatches the zygote's messages until its socket closes
/// or it breaks the protocol.
async fn read(shared: Arc<Shared>) {
    loop {
        let message = match receive(&shared.socket).await {
            Ok((bytes, _)) if !bytes.is_empty() => bytes,
            _ => break,
        };
        match serde_json::from_slice::<FromZygote>(&message) {
            Ok(FromZygote::Forked { id, pid }) => {
                let (sender, exit) = watch::channel(None);
                lock(&shared.exits).insert(pid, sender);
                if let Some(reply) = lock(&shared.pending).remove(&id) {
                    let _ = reply.send(Ok(Forked {
                        jail_pid: pid,
                        exit,
                    }));
                }
            }
            Ok(FromZygote::ForkFailed { id, message }) => {
                if let Some(reply) = id.and_then(|id| lock(&shared.pending).remove(&id)) {
                    let _ = reply.send(Err(ForkError::Refused(message)));
                }
            }
            Ok(FromZygote::Exited {
                pid,
                exit_code,
                signal,
            }) => {
                if let Some(sender) = lock(&shared.exits).remove(&pid) {
                    let status = describe_exit(exit_code, signal);
                    let _ = sender.send(Some(ChildExit::Status(status)));
                }
            }
            Ok(FromZygote::Ready(_)) | Err(_) => {
                tracing::warn!(
                    message = %String::from_utf8_lossy(&message[..message.len().min(200)]),
                    "the zygote sent an unexpected control message; ending it"
                );
                break;
            }
        }
    }
    shared.alive.store(false, Ordering::SeqCst);
    for (_, reply) in lock(&shared.pending).drain() {
        let _ = reply.send(Err(ForkError::ZygoteEnded));
    }
    for (_, sender) in lock(&shared.exits).drain() {
        let _ = sender.send(Some(ChildExit::ZygoteGone));
    }
    shared.died.notify_waiters();
    // A zygote that stopped making sense is not left running: without its
    // control socket it exits, and its jail with it.
    let _ = nix::sys::socket::shutdown(shared.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn send(socket: &AsyncFd<OwnedFd>, message: &[u8], fds: &[RawFd]) -> io::Result<()> {
    loop {
        let mut ready = socket.writable().await?;
        let sent = ready.try_io(|inner| {
            let rights = [ControlMessage::ScmRights(fds)];
            sendmsg::<()>(
                inner.as_raw_fd(),
                &[IoSlice::new(message)],
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(result) => return result.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

/// One whole message and its sender's credentials; empty at end of stream.
async fn receive(socket: &AsyncFd<OwnedFd>) -> io::Result<(Vec<u8>, Option<UnixCredentials>)> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let mut ready = socket.readable().await?;
        let received = ready.try_io(|inner| {
            let mut space = nix::cmsg_space!(UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let message = recvmsg::<()>(
                inner.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            if message.flags.contains(MsgFlags::MSG_TRUNC) {
                return Err(io::Error::other("a control message was too long"));
            }
            let credentials = message.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|cmsg| match cmsg {
                    ControlMessageOwned::ScmCredentials(c) => Some(c),
                    _ => None,
                })
            });
            Ok((message.bytes, credentials))
        });
        match received {
            Ok(Ok((bytes, credentials))) => {
                buffer.truncate(bytes);
                return Ok((buffer, credentials));
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// The client against a fake zygote: a thread on the other end of a real
/// control socket that speaks the protocol, forking nothing.
#[cfg(test)]
mod tests {
    use nix::sys::socket::{recvmsg as nix_recvmsg, ControlMessageOwned as Owned};

    use super::*;
    use crate::job::channel::JobChannel;

    /// The zygote's end, as a blocking socket the fake drives.
    struct FakeZygote {
        socket: OwnedFd,
    }

    impl FakeZygote {
        /// One message; the kernel stamps it with our credentials, as it
        /// does a real zygote's, because the server's end asks for them.
        fn say(&self, message: &str) {
            nix::sys::socket::send(
                self.socket.as_raw_fd(),
                message.as_bytes(),
                MsgFlags::empty(),
            )
            .unwrap();
        }

        /// The next request and how many descriptors came with it.
        fn hear(&self) -> (ToZygote, usize) {
            let mut buffer = vec![0u8; 1024];
            let mut space = nix::cmsg_space!([RawFd; 3]);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let message = nix_recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .unwrap();
            let mut fds = 0;
            for cmsg in message.cmsgs().unwrap() {
                if let Owned::ScmRights(received) = cmsg {
                    fds += received.len();
                    for fd in received {
                        nix::unistd::close(fd).unwrap();
                    }
                }
            }
            let bytes = message.bytes;
            (serde_json::from_slice(&buffer[..bytes]).unwrap(), fds)
        }
    }

    fn pair() -> (Control, FakeZygote) {
        let (ours, theirs) = control_pair().unwrap();
        (Control::new(ours).unwrap(), FakeZygote { socket: theirs })
    }

    fn ends() -> JobEnds {
        JobChannel::new(1 << 20, 1024).unwrap().1
    }

    #[tokio::test]
    async fn ready_then_a_fork_and_the_childs_end_are_reported() {
        let (control, zygote) = pair();
        zygote.say(r#"{"type":"ready","python":"3.11.2","numpy":"2.3.5","pandas":"2.3.3"}"#);
        let (versions, host_pid) = control.wait_ready().await.unwrap();
        assert_eq!(versions.numpy, "2.3.5");
        assert_eq!(host_pid, std::process::id() as i32);
        control.start();

        let fake = std::thread::spawn(move || {
            let (request, fds) = zygote.hear();
            assert_eq!(request, ToZygote::Fork { id: 7 });
            assert_eq!(
                fds, 3,
                "the job socket and both pipes travel with the request"
            );
            zygote.say(r#"{"type":"forked","id":7,"pid":12}"#);
            zygote.say(r#"{"type":"exited","pid":12,"exit_code":null,"signal":9}"#);
            zygote
        });
        let mut forked = control.fork(7, ends()).await.unwrap();
        assert_eq!(forked.jail_pid, 12);
        let exit = forked.exit.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(
            exit,
            Some(ChildExit::Status("killed by signal 9 (SIGKILL)".into()))
        );
        let _zygote = fake.join().unwrap();
        assert!(control.is_alive());
    }

    #[tokio::test]
    async fn a_refused_fork_is_an_error_and_the_zygote_lives_on() {
        let (control, zygote) = pair();
        control.start();
        let fake = std::thread::spawn(move || {
            let _ = zygote.hear();
            zygote.say(r#"{"type":"fork_failed","id":3,"message":"EAGAIN"}"#);
            zygote
        });
        let error = control.fork(3, ends()).await.err().unwrap();
        assert!(
            matches!(&error, ForkError::Refused(why) if why == "EAGAIN"),
            "{error}"
        );
        let _zygote = fake.join().unwrap();
        assert!(control.is_alive());
    }

    #[tokio::test]
    async fn a_zygote_that_dies_fails_pending_forks_and_ends_its_children() {
        let (control, zygote) = pair();
        control.start();
        let fake = std::thread::spawn(move || {
            let _ = zygote.hear();
            zygote.say(r#"{"type":"forked","id":1,"pid":5}"#);
            let _ = zygote.hear();
            drop(zygote); // dies with a fork pending and a child running
        });
        let mut child = control.fork(1, ends()).await.unwrap();
        let error = control.fork(2, ends()).await.err().unwrap();
        assert!(matches!(error, ForkError::ZygoteEnded), "{error}");
        fake.join().unwrap();
        let exit = child.exit.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(exit, Some(ChildExit::ZygoteGone));
        control.died().await;
        assert!(!control.is_alive());
        assert!(matches!(
            control.fork(3, ends()).await,
            Err(ForkError::ZygoteEnded)
        ));
    }

    #[tokio::test]
    async fn a_zygote_breaking_the_protocol_is_cut_off() {
        let (control, zygote) = pair();
        control.start();
        zygote.say(r#"{"type":"ready","python":"3","numpy":"2","pandas":"2"}"#);
        control.died().await;
        assert!(!control.is_alive());
        // Our end was shut down: the zygote reads end of stream and exits.
        let mut buffer = [0u8; 16];
        let read = nix::unistd::read(&zygote.socket, &mut buffer).unwrap();
        assert_eq!(read, 0);
    }

    #[tokio::test]
    async fn a_ready_message_without_credentials_or_of_the_wrong_kind_is_refused() {
        let (control, zygote) = pair();
        zygote.say(r#"{"type":"forked","id":1,"pid":2}"#);
        assert!(matches!(
            control.wait_ready().await,
            Err(ZygoteNotReady::UnexpectedMessage)
        ));
        zygote.say("not json");
        assert!(matches!(
            control.wait_ready().await,
            Err(ZygoteNotReady::Unreadable(_))
        ));
        drop(zygote);
        assert!(matches!(
            control.wait_ready().await,
            Err(ZygoteNotReady::Closed)
        ));
    }
}
