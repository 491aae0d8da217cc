//! The process-wide state the signal handler shares with listeners, and the
//! handler itself (see the [module docs](super#design)).
//!
//! # Who writes what
//! - `Signal::deliveries`: bumped only by the handler; read by listeners.
//! - `Signal::installed`, and every store to a slot: only under `LOCK`.
//! - `SLOTS` and `Slot::next`: a slot's `next` is set before the slot is
//!   published at the head of `SLOTS` (under `LOCK`), and never changes.
//! - `RUNNING`: each handler increments it on entry and decrements it on
//!   exit; a releasing listener waits for it to read zero.
//!
//! Every atomic access is `SeqCst`: none of this is on a hot path, and the
//! argument below needs one total order.
//!
//! # Why a released fd is never written to
//! A handler increments `RUNNING` (A), then loads a slot's fd (B) and
//! writes to it. A releasing listener stores -1 to the fd (D), then loads
//! `RUNNING` (E) until it reads zero, then closes the fd. If B read the old
//! fd, B precedes D in the total order, so A precedes E and E counts that
//! handler until its decrement, which comes after its write.

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize};
use std::sync::Mutex;

/// One more than the largest signal number (Linux's `_NSIG`, 64, plus one).
pub(super) const NSIG: usize = 65;

/// The state of one signal number.
struct Signal {
    /// How many times the signal has been delivered since its handler was
    /// installed.
    deliveries: AtomicU64,
    /// Whether the handler is installed.
    installed: AtomicBool,
}

static SIGNALS: [Signal; NSIG] = [const {
    Signal {
        deliveries: AtomicU64::new(0),
        installed: AtomicBool::new(false),
    }
}; NSIG];

/// A listener's entry in the list the handler walks.
pub(super) struct Slot {
    /// The next (older) slot; set before the slot is published.
    next: AtomicPtr<Slot>,
    /// The signal listened for; 0 when the slot is free.
    signum: AtomicI32,
    /// The listener's eventfd, or -1.
    fd: AtomicI32,
}

/// The newest slot; the list only ever grows.
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());

/// Handlers running now, on any thread.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Serialises installing handlers and claiming and releasing slots (never
/// taken by the handler).
static LOCK: Mutex<()> = Mutex::new(());

/// The deliveries of `signum` so far (`signum` is in range: checked by
/// `listen`).
pub(super) fn deliveries(signum: libc::c_int) -> u64 {
    usize::try_from(signum)
        .ok()
        .and_then(|i| SIGNALS.get(i))
        .map_or(0, |s| s.deliveries.load(SeqCst))
}

/// Installs the handler for `signum` if needed and adds `fd` to the fds it
/// writes to. Returns the listener's slot and the deliveries so far: later
/// deliveries are the listener's.
pub(super) fn listen(signum: libc::c_int, fd: RawFd) -> io::Result<(&'static Slot, u64)> {
    let Some(state) = usize::try_from(signum).ok().and_then(|i| SIGNALS.get(i)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signum} is out of range"),
        ));
    };
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !state.installed.load(SeqCst) {
        install(signum)?;
        state.installed.store(true, SeqCst);
    }
    let slot = claim(signum, fd);
    // After the slot is visible: any delivery this load misses reaches
    // `fd`.
    Ok((slot, state.deliveries.load(SeqCst)))
}

/// A free slot (or a new one) now holding `signum` and `fd`. Under `LOCK`.
fn claim(signum: libc::c_int, fd: RawFd) -> &'static Slot {
    let mut p = SLOTS.load(SeqCst);
    while !p.is_null() {
        // SAFETY: slots are leaked boxes, never freed.
        let slot: &'static Slot = unsafe { &*p };
        if slot.signum.load(SeqCst) == 0 {
            // The fd first: a handler that sees the signal number sees it.
            slot.fd.store(fd, SeqCst);
            slot.signum.store(signum, SeqCst);
            return slot;
        }
        p = slot.next.load(SeqCst);
    }
    let slot: &'static Slot = Box::leak(Box::new(Slot {
        next: AtomicPtr::new(SLOTS.load(SeqCst)),
        signum: AtomicI32::new(signum),
        fd: AtomicI32::new(fd),
    }));
    SLOTS.store((slot as *const Slot).cast_mut(), SeqCst);
    slot
}

/// Empties `slot`; once this returns, no handler writes to its old fd, which
/// the caller may close.
pub(super) fn release(slot: &'static Slot) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    slot.fd.store(-1, SeqCst);
    slot.signum.store(0, SeqCst);
    // Handlers are short (a few writes); see the module docs for why this
    // is enough.
    while RUNNING.load(SeqCst) != 0 {
        std::thread::yield_now();
    }
}

fn install(signum: libc::c_int) -> io::Result<()> {
    // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised and `handler` only does
    // async-signal-safe work; the old action is not wanted (null).
    if unsafe { libc::sigaction(signum, &action, ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The handler: counts the delivery and writes to every listener's eventfd.
/// Async-signal-safe: atomics, and `write`, which POSIX lists as safe.
extern "C" fn handler(signum: libc::c_int) {
    // SAFETY: `__errno_location` returns this thread's errno, always valid.
    let errno = unsafe { *libc::__errno_location() };
    RUNNING.fetch_add(1, SeqCst);
    if let Some(state) = usize::try_from(signum).ok().and_then(|i| SIGNALS.get(i)) {
        state.deliveries.fetch_add(1, SeqCst);
    }
    let one: u64 = 1;
    let mut p = SLOTS.load(SeqCst);
    while !p.is_null() {
        // SAFETY: slots are leaked boxes, never freed.
        let slot = unsafe { &*p };
        if slot.signum.load(SeqCst) == signum {
            let fd = slot.fd.load(SeqCst);
            if fd >= 0 {
                // SAFETY: `fd` stays open while `RUNNING` counts this
                // handler (module docs); `one` is 8 readable bytes. A full
                // eventfd (EAGAIN) is already readable: nothing to do.
                unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            }
        }
        p = slot.next.load(SeqCst);
    }
    RUNNING.fetch_sub(1, SeqCst);
    // SAFETY: as above; the interrupted code must see its own errno.
    unsafe { *libc::__errno_location() = errno };
}
