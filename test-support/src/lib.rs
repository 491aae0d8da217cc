//! Helpers shared by the tests and benchmarks of every crate in the Fulcrum
//! workspace: file-descriptor limits, process CPU time and memory, medians,
//! a lock for tests that must not overlap, a seeded PRNG, and reading an
//! HTTP status line.
//!
//! This crate depends on no Fulcrum crate, so every member (the DLB queue
//! included) can take it as a dev-dependency without a cycle. Helpers that
//! need a runtime (such as each suite's `runtimes()`) live in that suite's
//! own `tests/common` module.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use fastrand;

/// A PRNG seeded with `seed`: the same sequence on every run and platform,
/// so a failing case can be replayed from the seed it prints.
pub fn rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed)
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
}
