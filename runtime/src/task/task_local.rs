//! Task-local storage: [`task_local!`](crate::task_local), [`LocalKey`],
//! [`TaskLocalFuture`], with tokio's semantics.
//!
//! # How a value follows its task
//! The value lives in the [`TaskLocalFuture`] that
//! [`LocalKey::scope`] returns, not in any thread. Each time that future is
//! polled, it moves the value into the key's thread-local slot on the
//! polling thread, polls the inner future, and moves it back out, also
//! when the inner poll panics. So whichever worker polls the task (the DLB
//! queue may hand it to another between two polls), the value is there
//! during the poll and nowhere else; tasks interleaved on the same worker
//! never see each other's values. Spawned tasks do not inherit the value.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Declares task-local keys, tokio's `task_local!`: each `static NAME: T;`
/// becomes a [`LocalKey<T>`](crate::task::LocalKey), set for a future with
/// [`scope`](crate::task::LocalKey::scope) (or for a closure with
/// [`sync_scope`](crate::task::LocalKey::sync_scope)).
///
/// ```
/// fulcrum_runtime::task_local! {
///     pub static REQUEST_ID: u64;
///     static USER: String;
/// }
///
/// let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
/// let id = rt.block_on(REQUEST_ID.scope(7, async {
///     fulcrum_runtime::yield_now().await;
///     REQUEST_ID.get()
/// }));
/// assert_eq!(id, 7);
/// assert!(USER.try_with(|u| u.clone()).is_err(), "not set outside a scope");
/// # Ok::<(), std::io::Error>(())
/// ```
#[macro_export]
macro_rules! task_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty; $($rest:tt)*) => {
        $crate::__task_local_inner!($(#[$attr])* $vis $name, $t);
        $crate::task_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty) => {
        $crate::__task_local_inner!($(#[$attr])* $vis $name, $t);
    };
}

/// One key of [`task_local!`]. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __task_local_inner {
    ($(#[$attr:meta])* $vis:vis $name:ident, $t:ty) => {
        $(#[$attr])*
        $vis static $name: $crate::task::LocalKey<$t> = {
            ::std::thread_local! {
                static __KEY: ::std::cell::RefCell<::std::option::Option<$t>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            $crate::task::LocalKey::__new(&__KEY)
        };
    };
}

/// A key for task-local data, declared with
/// [`task_local!`](crate::task_local); tokio's `task::LocalKey`.
///
/// The value is set for the duration of a future with [`scope`](Self::scope)
/// (or of a closure with [`sync_scope`](Self::sync_scope)); inside, it is
/// read with [`with`](Self::with), [`try_with`](Self::try_with) and
/// [`get`](Self::get). It stays with its task across `.await` points and
/// across moves between workers (see the module docs).
pub struct LocalKey<T: 'static> {
    inner: &'static std::thread::LocalKey<RefCell<Option<T>>>,
}

impl<T: 'static> LocalKey<T> {
    /// What [`task_local!`](crate::task_local) expands to. Not a public
    /// API.
    #[doc(hidden)]
    pub const fn __new(inner: &'static std::thread::LocalKey<RefCell<Option<T>>>) -> Self {
        Self { inner }
    }

    /// Runs `future` with the key set to `value`; the value lives in the
    /// returned future, and is set only while that future is polled (and
    /// while the inner future is dropped).
    pub fn scope<F: Future>(&'static self, value: T, future: F) -> TaskLocalFuture<T, F> {
        TaskLocalFuture {
            key: self,
            slot: Some(value),
            future: Some(future),
            _pinned: PhantomPinned,
        }
    }

    /// Runs `f` with the key set to `value`.
    ///
    /// # Panics
    /// If called from within a [`with`](Self::with) closure of this same
    /// key (the slot is borrowed), as tokio's.
    #[track_caller]
    pub fn sync_scope<F: FnOnce() -> R, R>(&'static self, value: T, f: F) -> R {
        let mut slot = Some(value);
        match self.scope_inner(&mut slot, f) {
            Ok(r) => r,
            Err(e) => e.panic(),
        }
    }

    /// Swaps `slot` into the thread-local for the duration of `f`, and
    /// back out afterwards, even if `f` panics.
    fn scope_inner<F: FnOnce() -> R, R>(
        &'static self,
        slot: &mut Option<T>,
        f: F,
    ) -> Result<R, ScopeInnerErr> {
        struct Reset<'a, T: 'static> {
            key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
            slot: &'a mut Option<T>,
        }
        impl<T: 'static> Drop for Reset<'_, T> {
            fn drop(&mut self) {
                // The slot was borrowable on entry, and every borrow taken
                // meanwhile (`with`) has ended: this cannot fail.
                let _ = self.key.try_with(|cell| {
                    if let Ok(mut value) = cell.try_borrow_mut() {
                        std::mem::swap(self.slot, &mut *value);
                    }
                });
            }
        }

        self.inner
            .try_with(|cell| {
                cell.try_borrow_mut()
                    .map(|mut value| std::mem::swap(slot, &mut *value))
                    .map_err(|_| ScopeInnerErr::Borrowed)
            })
            .map_err(|_| ScopeInnerErr::Destroyed)??;
        let _reset = Reset {
            key: self.inner,
            slot,
        };
        Ok(f())
    }

    /// Runs `f` with a reference to the value.
    ///
    /// # Panics
    /// Outside a [`scope`](Self::scope) of this key, as tokio's.
    #[track_caller]
    pub fn with<F: FnOnce(&T) -> R, R>(&'static self, f: F) -> R {
        match self.try_with(f) {
            Ok(r) => r,
            Err(_) => panic!(
                "cannot access a task-local storage value without setting it first: call \
                 `LocalKey::scope` (or `sync_scope`) around the code that reads it"
            ),
        }
    }

    /// Runs `f` with a reference to the value, or returns an
    /// [`AccessError`] outside a [`scope`](Self::scope) of this key.
    pub fn try_with<F: FnOnce(&T) -> R, R>(&'static self, f: F) -> Result<R, AccessError> {
        // `f` is kept aside so that it runs outside `try_with`'s closure
        // only in the error case; inside, it runs with the value borrowed.
        let mut f = Some(f);
        let out = self.inner.try_with(|cell| {
            let value = cell.try_borrow().ok()?;
            let value = value.as_ref()?;
            f.take().map(|f| f(value))
        });
        match out {
            Ok(Some(r)) => Ok(r),
            _ => Err(AccessError(())),
        }
    }
}

impl<T: Clone + 'static> LocalKey<T> {
    /// A copy of the value (tokio requires `T: Copy`; any `Clone` type
    /// works here).
    ///
    /// # Panics
    /// Outside a [`scope`](Self::scope) of this key.
    #[track_caller]
    pub fn get(&'static self) -> T {
        self.with(T::clone)
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("LocalKey { .. }")
    }
}

/// Why [`LocalKey::sync_scope`] or a [`TaskLocalFuture`] could not set the
/// value.
enum ScopeInnerErr {
    /// The slot is borrowed: called from inside `with` on the same key.
    Borrowed,
    /// The thread's locals are being torn down.
    Destroyed,
}

impl ScopeInnerErr {
    #[track_caller]
    fn panic(&self) -> ! {
        match self {
            Self::Borrowed => panic!(
                "cannot enter a task-local scope while the task-local storage is borrowed \
                 (inside `LocalKey::with` of the same key)"
            ),
            Self::Destroyed => panic!(
                "cannot enter a task-local scope during or after destruction of the underlying \
                 thread-local"
            ),
        }
    }
}

/// Returned by [`LocalKey::try_with`] outside a scope of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError(());

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task-local value not set")
    }
}

impl Error for AccessError {}

/// The future of [`LocalKey::scope`]: runs its inner future with the key
/// set. tokio's `task::futures::TaskLocalFuture`.
#[must_use = "futures do nothing unless polled"]
pub struct TaskLocalFuture<T: 'static, F> {
    key: &'static LocalKey<T>,
    /// The value, while the inner future is not being polled.
    slot: Option<T>,
    /// The inner future: `None` once it completed or was dropped.
    /// Structurally pinned: polled in place, and dropped in place (by
    /// assigning `None`), with the value set.
    future: Option<F>,
    _pinned: PhantomPinned,
}

impl<T: 'static, F> TaskLocalFuture<T, F> {
    /// Takes the value out, leaving the key unset for the rest of the
    /// future's polls; `None` if it was taken already, or while the future
    /// is being polled.
    pub fn take_value(self: Pin<&mut Self>) -> Option<T> {
        // SAFETY: `slot` is not structurally pinned: it is moved in and out
        // freely; nothing here moves `future`.
        unsafe { self.get_unchecked_mut() }.slot.take()
    }
}

impl<T: 'static, F: Future> Future for TaskLocalFuture<T, F> {
    type Output = F::Output;

    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is never moved out of the pinned struct (it is
        // polled in place and dropped in place, in `Drop`); `slot` and
        // `key` are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let key = this.key;
        let future = &mut this.future;
        let polled = key.scope_inner(&mut this.slot, || {
            let fut = future.as_mut()?;
            // SAFETY: see above: the future stays where it is.
            let fut = unsafe { Pin::new_unchecked(fut) };
            Some(fut.poll(cx))
        });
        match polled {
            Ok(Some(Poll::Ready(out))) => {
                // Done: drop the finished future now, with the value set.
                let _ = key.scope_inner(&mut this.slot, || *future = None);
                Poll::Ready(out)
            }
            Ok(Some(Poll::Pending)) => Poll::Pending,
            Ok(None) => panic!("`TaskLocalFuture` polled after completion"),
            Err(e) => e.panic(),
        }
    }
}

impl<T: 'static, F> Drop for TaskLocalFuture<T, F> {
    fn drop(&mut self) {
        if self.future.is_none() {
            return;
        }
        // Drop the inner future in place with the value set, as tokio does,
        // so that its destructors can read the task-local. If the value
        // cannot be set (thread-locals torn down), drop it without.
        let future = &mut self.future;
        let set = self
            .key
            .scope_inner(&mut self.slot, || *future = None)
            .is_ok();
        if !set {
            *future = None;
        }
    }
}

impl<T: 'static + fmt::Debug, F> fmt::Debug for TaskLocalFuture<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskLocalFuture")
            .field("value", &self.slot)
            .finish_non_exhaustive()
    }
}
