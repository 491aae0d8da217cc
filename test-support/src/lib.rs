//! Helpers shared by the tests and benchmarks of every crate in the Fulcrum
//! workspace: file-descriptor limits, process CPU time and memory, medians,
//! a lock for tests that must not overlap, a seeded PRNG, reading an HTTP
//! status line, and re-running a test binary as a child process.
//!
//! This crate depends on no Fulcrum crate, so every member (the DLB queue
//! included) can take it as a dev-dependency without a cycle. Helpers that
//! need a runtime (such as each suite's `runtimes()`) live in that suite's
//! own `tests/common` module.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::Duration;

pub use fastrand;

/// A PRNG seeded with `seed`: the same sequence on every run and platform,
/// so a failing case can be replayed from the seed it prints.
pub fn rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed)
}

/// `len` bytes from `rng`.
pub fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn fd_limits() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass, which lives for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (lim.rlim_cur, lim.rlim_max)
}

/// Sets the soft `RLIMIT_NOFILE` to `soft`, capped at the hard limit, and
/// returns the soft limit now in force. Raising and lowering both work
/// (a child process lowers it to provoke `EMFILE`); the limit is inherited
/// by processes spawned afterwards.
pub fn set_soft_fd_limit(soft: u64) -> u64 {
    let (_, hard) = fd_limits();
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass, which lives for the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    lim.rlim_cur
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` where the hard limit
/// allows (never lowers it) and returns the soft limit now in force, which
/// may be below `want`: a caller that cannot run with less says so.
pub fn raise_fd_limit(want: u64) -> u64 {
    let (soft, _) = fd_limits();
    if soft >= want {
        soft
    } else {
        set_soft_fd_limit(want)
    }
}

/// The number of file descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The resident set size of process `pid`, in KiB. Panics if the process
/// has exited (its `/proc` entry is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}: did it exit?"))
}

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Duration {
    // SAFETY: all-zero is a valid `rusage`; getrusage overwrites it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct we pass, which lives for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The median of `values`, ignoring NaN (the mean of the two middle values
/// for an even count); NaN when nothing is left.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of `values` (the mean of the two middle values for an even
/// count); zero when there are none.
pub fn median_duration(values: impl IntoIterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = values.into_iter().collect();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// Holds a process-wide lock so that the tests of one binary that share a
/// global (the fault-injection switches, the fd table) run one at a time.
/// A test that panicked while holding it does not poison it for the rest.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The status code of an HTTP/1.x response's status line (`HTTP/1.1 200 …`),
/// or `None` if `response` does not start with one.
pub fn status_code(response: &[u8]) -> Option<u16> {
    let rest = response
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| response.strip_prefix(b"HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// This test binary run again as a child process, running only `test` (an
/// ignored test of the same binary) with the environment variable `env`
/// set, for a test that needs a process of its own: one with a low fd
/// limit, say.
///
/// The two talk in lines: the parent sends a command on the child's stdin
/// ([`ask`](Self::ask)) and the child, in [`answer_parent`], prints the
/// command followed by its answer on stdout. Dropping this closes the
/// child's stdin, its cue to finish, and waits for it to exit.
pub struct ChildTest {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildTest {
    /// Starts the child: this binary with `--exact test --ignored
    /// --nocapture`, `env` set to `1`, stdin and stdout piped.
    pub fn start(test: &str, env: &str) -> ChildTest {
        let exe = std::env::current_exe().expect("the path of this test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child test process");
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildTest { child, lines }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What follows `prefix` in the next line of the child's output that
    /// has it, trimmed (libtest may print `test name ... ` in front of the
    /// child's first line). Panics if no such line comes within 60 s.
    pub fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the child test process stopped talking");
            if let Some(i) = line.find(prefix) {
                return line[i + prefix.len()..].trim().to_owned();
            }
        }
    }

    /// Sends `command` on a line of its own and returns the child's answer
    /// (what follows `command ` in its output).
    pub fn ask(&mut self, command: &str) -> String {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("the child's stdin is open");
        writeln!(stdin, "{command}").expect("write to the child");
        stdin.flush().expect("write to the child");
        self.expect(&format!("{command} "))
    }

    /// The CPU time the child has used so far (its [`cpu_time`]).
    pub fn cpu_time(&mut self) -> Duration {
        let micros = self.ask("cpu");
        Duration::from_micros(micros.parse().expect("the child's CPU time, in µs"))
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// In an ignored test that [`ChildTest::start`] runs: whether this process
/// is that child (`env` is set). The test returns at once when it is not,
/// as when someone runs the ignored tests by hand.
pub fn is_child(env: &str) -> bool {
    std::env::var_os(env).is_some()
}

/// In the child: answers the parent's commands, one a line on stdin, until
/// stdin closes. `cpu` gets this process's [`cpu_time`] in microseconds;
/// any other command what `answer` returns for it, or no answer for
/// `None`. Each answer is printed as the command, a space and the answer.
pub fn answer_parent(mut answer: impl FnMut(&str) -> Option<String>) {
    for command in std::io::stdin().lock().lines().map_while(Result::ok) {
        let reply = if command == "cpu" {
            Some(cpu_time().as_micros().to_string())
        } else {
            answer(&command)
        };
        if let Some(reply) = reply {
            println!("{command} {reply}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median([f64::NAN]).is_nan());
        let ms = Duration::from_millis;
        assert_eq!(
            median_duration([ms(5), ms(1), ms(3), ms(2)]),
            Duration::from_micros(2500)
        );
        assert_eq!(median_duration([]), Duration::ZERO);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(status_code(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.1 2x0 OK\r\n"), None);
        assert_eq!(status_code(b"garbage"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn seeded_rng_repeats() {
        let (mut a, mut b) = (rng(7), rng(7));
        let xs: Vec<u64> = (0..8).map(|_| a.u64(..)).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.u64(..)).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn fd_limit_round_trip() {
        // Exact fd counts: no other test of this binary may open or close
        // fds meanwhile.
        let _one_at_a_time = serial();
        let (soft, hard) = fd_limits();
        assert!(soft <= hard);
        assert_eq!(raise_fd_limit(soft), soft);
        let before = open_fds();
        let f = std::fs::File::open("/proc/self/status").expect("open");
        assert_eq!(open_fds(), before + 1);
        drop(f);
        assert_eq!(open_fds(), before);
        assert!(rss_kib(std::process::id()) > 0);
    }

    #[test]
    fn cpu_time_advances_with_work() {
        // 50 ms of wall-clock spinning is at least some ms of CPU even on
        // a loaded machine; a broken reading (always zero) fails.
        let start = cpu_time();
        let wall = std::time::Instant::now();
        let mut x = 1u64;
        while wall.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(cpu_time() > start + Duration::from_millis(5));
    }

    #[test]
    fn random_bytes_follow_the_seed() {
        let a = random_bytes(&mut rng(3), 100);
        assert_eq!(a.len(), 100);
        assert_eq!(a, random_bytes(&mut rng(3), 100));
        assert_ne!(a, random_bytes(&mut rng(4), 100));
        assert!(random_bytes(&mut rng(3), 0).is_empty());
    }

    const CHILD_ENV: &str = "FULCRUM_TEST_SUPPORT_CHILD";

    /// The child of `child_test_answers_its_parent`.
    #[test]
    #[ignore = "run by child_test_answers_its_parent in a child process"]
    fn child_side() {
        if !is_child(CHILD_ENV) {
            return;
        }
        println!("pid {}", std::process::id());
        answer_parent(|command| {
            let n: u64 = command.strip_prefix("double ")?.parse().ok()?;
            Some((2 * n).to_string())
        });
    }

    #[test]
    fn child_test_answers_its_parent() {
        // Its pipes would change the fd count `fd_limit_round_trip` reads.
        let _one_at_a_time = serial();
        assert!(!is_child(CHILD_ENV));
        let mut child = ChildTest::start("tests::child_side", CHILD_ENV);
        let pid: u32 = child.expect("pid ").parse().expect("a pid");
        assert_eq!(pid, child.id());
        assert_eq!(child.ask("double 21"), "42");
        // Starting a test binary takes some CPU, and it does not go back.
        let cpu = child.cpu_time();
        assert!(cpu > Duration::ZERO);
        assert!(child.cpu_time() >= cpu);
        // Unanswered commands get nothing; the next answer is still right.
        let stdin = child.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "unknown").expect("write");
        assert_eq!(child.ask("double 5"), "10");
        let id = child.id();
        drop(child);
        // Dropped: the child has exited and been reaped.
        assert!(!std::path::Path::new(&format!("/proc/{id}")).exists());
    }
}
