//! Child processes, tokio's `process` module: [`Command`], [`Child`] and
//! its piped standard streams ([`ChildStdin`], [`ChildStdout`],
//! [`ChildStderr`], tokio's `AsyncWrite`/`AsyncRead`).
//!
//! The runtime waits for children without a thread per child: each
//! child's pidfd is registered with the reactor of the thread that waits
//! for it, with a fallback on `SIGCHLD` through Fulcrum's signal handling
//! where pidfds are unavailable (see `reap`). A child dropped before it
//! exits is still reaped (and killed first with
//! [`kill_on_drop`](Command::kill_on_drop)), so none is left a zombie.
//!
//! ```
//! use fulcrum_net::process::Command;
//!
//! # let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let out = Command::new("echo").arg("hello").output().await?;
//! assert!(out.status.success());
//! assert_eq!(out.stdout, b"hello\n");
//! # Ok::<(), std::io::Error>(())
//! # })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod pipe;
mod reap;

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Output, Stdio};
use std::task::{Context, Poll};

use tokio::io::AsyncReadExt;

pub use pipe::{ChildStderr, ChildStdin, ChildStdout};
use reap::{ExitWatch, Running};

/// A process builder, tokio's `process::Command`: std's `Command`, whose
/// [`spawn`](Self::spawn) gives a [`Child`] the runtime waits for, plus
/// [`kill_on_drop`](Self::kill_on_drop).
pub struct Command {
    std: std::process::Command,
    kill_on_drop: bool,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("std", &self.std)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}

impl From<std::process::Command> for Command {
    fn from(std: std::process::Command) -> Self {
        Command {
            std,
            kill_on_drop: false,
        }
    }
}

impl Command {
    /// A command for `program`, with std's defaults: inherited environment,
    /// working directory and standard streams.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        std::process::Command::new(program).into()
    }

    /// The std command inside.
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// The std command inside, to change.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// The std command inside (`kill_on_drop` is lost).
    pub fn into_std(self) -> std::process::Command {
        self.std
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts from an empty environment.
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's standard input (`Stdio::piped()` gives
    /// [`Child::stdin`]).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self
    }

    /// The child's standard output (`Stdio::piped()` gives
    /// [`Child::stdout`]).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self
    }

    /// The child's standard error (`Stdio::piped()` gives
    /// [`Child::stderr`]).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self
    }

    /// Whether dropping the [`Child`] (or the future of
    /// [`status`](Self::status)/[`output`](Self::output)) before the
    /// process exits kills it (`SIGKILL`); default `false`. Either way the
    /// runtime reaps it once it exits.
    pub fn kill_on_drop(&mut self, kill_on_drop: bool) -> &mut Command {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// What [`kill_on_drop`](Self::kill_on_drop) was set to.
    pub fn get_kill_on_drop(&self) -> bool {
        self.kill_on_drop
    }

    /// The child's user id (`setuid`).
    pub fn uid(&mut self, id: u32) -> &mut Command {
        self.std.uid(id);
        self
    }

    /// The child's group id (`setgid`).
    pub fn gid(&mut self, id: u32) -> &mut Command {
        self.std.gid(id);
        self
    }

    /// The child's `argv[0]`.
    pub fn arg0(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg0(arg);
        self
    }

    /// The child's process group (`setpgid`; 0: a new group of its own).
    pub fn process_group(&mut self, pgroup: i32) -> &mut Command {
        self.std.process_group(pgroup);
        self
    }

    /// Runs `f` in the child after `fork`, before `exec`.
    ///
    /// # Safety
    /// As std's `CommandExt::pre_exec`: `f` runs in a forked copy of a
    /// multi-threaded process and may only do async-signal-safe work.
    pub unsafe fn pre_exec<F>(&mut self, f: F) -> &mut Command
    where
        F: FnMut() -> io::Result<()> + Send + Sync + 'static,
    {
        // SAFETY: forwarded from the caller.
        unsafe { self.std.pre_exec(f) };
        self
    }

    /// Starts the process. Its piped standard streams are non-blocking and
    /// register with the reactor of the thread that first polls them; the
    /// wait for its exit with the reactor of the thread that waits.
    ///
    /// # Errors
    /// std's spawn error, or (after killing the child) the error of setting
    /// up the wait for its exit (out of file descriptors, say).
    pub fn spawn(&mut self) -> io::Result<Child> {
        reap::reap_orphans();
        let mut std = self.std.spawn()?;
        let pid = std.id();
        let watch = match ExitWatch::new(pid) {
            Ok(w) => w,
            Err(e) => {
                // Nothing could wait for it: do not leave it running
                // unwatched. The orphan list reaps it.
                let _ = std.kill();
                reap::reap_in_background_std(std);
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot watch child {pid} for its exit: {e}"),
                ));
            }
        };
        let stdin = std.stdin.take().map(ChildStdin::from_std).transpose();
        let stdout = std.stdout.take().map(ChildStdout::from_std).transpose();
        let stderr = std.stderr.take().map(ChildStderr::from_std).transpose();
        let mut child = Child {
            state: State::Running(Running::new(std, watch)),
            kill_on_drop: self.kill_on_drop,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        // On an error here, dropping `child` kills it if asked and reaps it.
        child.stdin = stdin?;
        child.stdout = stdout?;
        child.stderr = stderr?;
        Ok(child)
    }

    /// Runs the process to completion and returns its exit status. Its
    /// standard streams are inherited unless set otherwise (pipes are
    /// closed at once). The process starts when this is called; dropping
    /// the future before it completes drops the child (see
    /// [`kill_on_drop`](Self::kill_on_drop)).
    pub fn status(&mut self) -> impl Future<Output = io::Result<ExitStatus>> {
        let child = self.spawn();
        async move {
            let mut child = child?;
            drop(child.stdin.take());
            drop(child.stdout.take());
            drop(child.stderr.take());
            child.wait().await
        }
    }

    /// Runs the process to completion, collecting its standard output and
    /// error. As tokio's (and unlike std's), stdout and stderr are always
    /// piped here, whatever they were set to. The process starts when this
    /// is called.
    pub fn output(&mut self) -> impl Future<Output = io::Result<Output>> {
        self.std.stdout(Stdio::piped());
        self.std.stderr(Stdio::piped());
        let child = self.spawn();
        async move { child?.wait_with_output().await }
    }
}

enum State {
    Running(Running),
    Exited(ExitStatus),
}

/// A spawned process, tokio's `process::Child`.
///
/// Its piped standard streams are in the public fields. [`wait`](Self::wait)
/// waits for the exit through the runtime's reactor (no thread per
/// child). Dropping it before the process exits kills it if
/// [`Command::kill_on_drop`] was set, and in any case leaves it to the
/// runtime to reap when it exits.
pub struct Child {
    state: State,
    kill_on_drop: bool,
    /// The child's standard input, if piped.
    pub stdin: Option<ChildStdin>,
    /// The child's standard output, if piped.
    pub stdout: Option<ChildStdout>,
    /// The child's standard error, if piped.
    pub stderr: Option<ChildStderr>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Child");
        match &self.state {
            State::Running(r) => d
                .field("pid", &self.id())
                .field("pidfd", &r.watch().is_pidfd()),
            State::Exited(status) => d.field("status", status),
        };
        d.field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl Child {
    /// The process id, until the process has been waited for (then `None`,
    /// as in tokio: the id may be reused).
    pub fn id(&self) -> Option<u32> {
        match &self.state {
            State::Running(r) => Some(r.pid()),
            State::Exited(_) => None,
        }
    }

    /// Sends `SIGKILL`, without waiting for the process to exit.
    ///
    /// # Errors
    /// `InvalidInput` if the process was already waited for, as tokio's;
    /// else the OS error of `kill`.
    pub fn start_kill(&mut self) -> io::Result<()> {
        match &mut self.state {
            State::Running(r) => r.std().kill(),
            State::Exited(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid argument: can't kill an exited process",
            )),
        }
    }

    /// Kills the process (`SIGKILL`) and waits for it to exit.
    ///
    /// # Errors
    /// As [`start_kill`](Self::start_kill) and [`wait`](Self::wait).
    pub async fn kill(&mut self) -> io::Result<()> {
        self.start_kill()?;
        self.wait().await.map(drop)
    }

    /// Waits for the process to exit and returns its status; closes its
    /// standard input first (so that a child reading it sees end-of-file),
    /// as tokio's. Cancel-safe: dropping the future leaves the child as it
    /// was.
    ///
    /// # Errors
    /// The OS error of `waitpid`, or if the wait cannot register with the
    /// reactor (outside a runtime).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        match &mut self.state {
            State::Exited(status) => Poll::Ready(Ok(*status)),
            State::Running(r) => match r.poll_wait(cx) {
                Poll::Ready(Ok(status)) => {
                    self.state = State::Exited(status);
                    Poll::Ready(Ok(status))
                }
                other => other,
            },
        }
    }

    /// The exit status if the process has exited, without waiting.
    ///
    /// # Errors
    /// The OS error of `waitpid`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.state {
            State::Exited(status) => Ok(Some(*status)),
            State::Running(r) => {
                let status = r.std().try_wait()?;
                if let Some(status) = status {
                    self.state = State::Exited(status);
                }
                Ok(status)
            }
        }
    }

    /// Waits for the process to exit while reading all of its standard
    /// output and error (those that are piped); closes its standard input
    /// first.
    ///
    /// # Errors
    /// As [`wait`](Self::wait), or a read error.
    pub async fn wait_with_output(mut self) -> io::Result<Output> {
        let mut stdout = self.stdout.take();
        let mut stderr = self.stderr.take();
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(out) = stdout.as_mut() {
                out.read_to_end(&mut buf).await?;
            }
            io::Result::Ok(buf)
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(err) = stderr.as_mut() {
                err.read_to_end(&mut buf).await?;
            }
            io::Result::Ok(buf)
        };
        let (status, stdout, stderr) = join3(self.wait(), read_out, read_err).await;
        Ok(Output {
            status: status?,
            stdout: stdout?,
            stderr: stderr?,
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Exited(exited_status()));
        if let State::Running(mut running) = state {
            if self.kill_on_drop {
                let _ = running.std().kill();
            }
            reap::reap_in_background(running);
        }
    }
}

/// A status to leave in a dropped `Child` (never observed).
fn exited_status() -> ExitStatus {
    std::os::unix::process::ExitStatusExt::from_raw(0)
}

/// Runs three futures to completion concurrently.
async fn join3<A, B, C>(a: A, b: B, c: C) -> (A::Output, B::Output, C::Output)
where
    A: Future,
    B: Future,
    C: Future,
{
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut c = std::pin::pin!(c);
    let (mut ra, mut rb, mut rc) = (None, None, None);
    std::future::poll_fn(|cx| {
        poll_into(a.as_mut(), cx, &mut ra);
        poll_into(b.as_mut(), cx, &mut rb);
        poll_into(c.as_mut(), cx, &mut rc);
        if ra.is_some() && rb.is_some() && rc.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    match (ra, rb, rc) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => unreachable!("join3 completes only with all three outputs"),
    }
}

fn poll_into<F: Future>(f: Pin<&mut F>, cx: &mut Context<'_>, slot: &mut Option<F::Output>) {
    if slot.is_none() {
        if let Poll::Ready(out) = f.poll(cx) {
            *slot = Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `SIGCHLD` fallback, forced: the same waits work without pidfds.
    #[test]
    fn waiting_through_sigchld() {
        let rt = fulcrum_runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut children = Vec::new();
            for code in 0..4 {
                let std = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("sleep 0.0{code}; exit {code}"))
                    .spawn()
                    .unwrap();
                let watch = ExitWatch::sigchld().unwrap();
                assert!(!watch.is_pidfd());
                children.push(Child {
                    state: State::Running(Running::new(std, watch)),
                    kill_on_drop: false,
                    stdin: None,
                    stdout: None,
                    stderr: None,
                });
            }
            let waits: Vec<_> = children
                .into_iter()
                .map(|mut c| fulcrum_runtime::spawn(async move { c.wait().await }))
                .collect();
            for (code, w) in waits.into_iter().enumerate() {
                let status = w.await.unwrap().unwrap();
                assert_eq!(status.code(), Some(code as i32));
            }
        });
    }

    #[test]
    fn pidfds_are_the_default_here() {
        let rt = fulcrum_runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut child = Command::new("true").spawn().unwrap();
            let pidfd = match &child.state {
                State::Running(r) => r.watch().is_pidfd(),
                State::Exited(_) => unreachable!("not waited for yet"),
            };
            // Linux 5.3+ without a seccomp filter against it: a pidfd;
            // else the SIGCHLD fallback.
            let supported = reap::pidfd_supported();
            assert_eq!(pidfd, supported);
            assert!(child.wait().await.unwrap().success());
        });
    }
}
