//! Waiting for termination signals without a signal handler.
//!
//! [`Signals::block`] blocks `SIGINT` and `SIGTERM` in the calling thread; threads it spawns
//! afterwards (the server's workers) inherit the mask. [`Signals::wait`] then takes the next one
//! with `sigwait(2)`, synchronously, so shutdown code runs in ordinary context. Block before
//! starting other threads: a thread that does not block the signals may receive one and die.

use std::io;
use std::mem;

/// `SIGINT` and `SIGTERM`, blocked in this thread.
#[derive(Clone, Copy)]
pub struct Signals {
    set: libc::sigset_t,
    /// The thread's mask before [`Signals::block`], for [`Signals::restore`].
    previous: libc::sigset_t,
}

impl Signals {
    /// Blocks `SIGINT` and `SIGTERM` in the calling thread (and the threads it spawns later).
    ///
    /// # Errors
    ///
    /// What `pthread_sigmask(3)` reports.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; SIGINT and SIGTERM are valid signal numbers.
        syscall!(sigemptyset(&mut set))?;
        // SAFETY: as above.
        syscall!(sigaddset(&mut set, libc::SIGINT))?;
        // SAFETY: as above.
        syscall!(sigaddset(&mut set, libc::SIGTERM))?;
        // SAFETY: sigset_t is plain data; pthread_sigmask fills it in.
        let mut previous: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: `set` is initialised and `previous` is writable.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Self { set, previous })
    }

    /// Gives the calling thread back the mask it had before [`Signals::block`] (threads
    /// spawned meanwhile keep theirs). A signal that arrived since and was not waited for is
    /// delivered then, with its usual effect.
    ///
    /// # Errors
    ///
    /// What `pthread_sigmask(3)` reports.
    pub fn restore(&self) -> io::Result<()> {
        // SAFETY: `self.previous` is an initialised sigset_t; the old mask is not wanted.
        let rc = unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Blocks until `SIGINT` or `SIGTERM` arrives; returns its number.
    ///
    /// # Errors
    ///
    /// What `sigwait(3)` reports.
    pub fn wait(&self) -> io::Result<i32> {
        let mut signal = 0;
        // SAFETY: `self.set` is an initialised sigset_t and `signal` is writable.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(signal)
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals(SIGINT, SIGTERM)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_waited_for() {
        std::thread::spawn(|| {
            let signals = Signals::block().unwrap();
            // SAFETY: raising a signal at the calling thread is always allowed.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGTERM) };
            assert_eq!(signals.wait().unwrap(), libc::SIGTERM);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn restore_unblocks_what_block_blocked() {
        std::thread::spawn(|| {
            let signals = Signals::block().unwrap();
            assert!(is_blocked(libc::SIGINT) && is_blocked(libc::SIGTERM));
            signals.restore().unwrap();
            assert!(!is_blocked(libc::SIGINT) && !is_blocked(libc::SIGTERM));
        })
        .join()
        .unwrap();
    }

    fn is_blocked(signal: i32) -> bool {
        // SAFETY: sigset_t is plain data; pthread_sigmask fills it in.
        let mut mask: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: a null new mask only reads the current one into `mask`.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) };
        assert_eq!(rc, 0);
        // SAFETY: `mask` is initialised and `signal` is a valid signal number.
        unsafe { libc::sigismember(&mask, signal) == 1 }
    }
}
