//! The one thread that starts every jail.
//!
//! Each nsjail is started with PR_SET_PDEATHSIG = SIGKILL, so that jails
//! never outlive the server. But Linux sends that signal when the *thread*
//! that forked the child exits, not the process: a jail forked from a tokio
//! blocking-pool thread would be killed when that thread retires after
//! idling, and one forked from an async worker thread would block that
//! thread for the fork. So every launch runs on this dedicated thread, which
//! lives exactly as long as the [`Launcher`] (the sandbox that owns it): the
//! jails it started die with it, which is what shutdown wants anyway.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Launch {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

pub struct Launcher {
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Launch>>,
    thread: Option<JoinHandle<()>>,
}

impl Launcher {
    /// Starts the thread. Must be called inside a tokio runtime: the children
    /// are registered with its process driver so they can be awaited.
    pub fn start() -> io::Result<Launcher> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = mpsc::channel::<Launch>();
        let thread = std::thread::Builder::new()
            .name("pyexec-launcher".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for mut launch in incoming {
                    // A panic here would end the thread, and with it every
                    // jail it started (PDEATHSIG): tokio's spawn panics when
                    // the runtime is shutting down. It becomes an error.
                    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        launch.command.spawn()
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("starting the process panicked")));
                    let _ = launch.reply.send(spawned);
                }
            })?;
        Ok(Launcher {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Forks and execs `command` on the launcher thread.
    pub async fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the launcher thread is gone");
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send(Launch { command, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_outlive_the_calling_task_but_not_the_launcher() {
        let launcher = Launcher::start().unwrap();
        let mut command = Command::new("sleep");
        command.arg("30");
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = tokio::spawn(async move {
            let child = launcher.spawn(command).await.unwrap();
            (child, launcher)
        })
        .await
        .unwrap();
        // The task that asked is gone; the child lives on.
        assert!(child.0.try_wait().unwrap().is_none());
        drop(child.1);
        // The launcher thread has exited: PDEATHSIG killed the child.
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.0.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
