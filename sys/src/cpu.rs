//! Which CPUs the process may run on, and pinning a thread to one of them.
//!
//! The engine runs one worker per allowed CPU and pins each to its own, so that a connection's
//! data stays in one core's caches. "Allowed" honours the process's affinity mask (taskset,
//! cgroups cpusets), not only the number of CPUs the machine has.

use std::io;
use std::mem;

/// The CPUs this process may run on, in ascending order.
///
/// # Errors
///
/// What `sched_getaffinity(2)` reports; in practice never on Linux.
pub fn allowed() -> io::Result<Vec<usize>> {
    let mut set = empty_set();
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    syscall!(sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set))?;
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| is_set(cpu, &set)).collect())
}

/// Pins the calling thread to `cpu`.
///
/// # Errors
///
/// `EINVAL` if `cpu` is outside the process's allowed set or beyond `CPU_SETSIZE`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut set = empty_set();
    // SAFETY: `cpu < CPU_SETSIZE` (checked above), so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    syscall!(sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set))?;
    Ok(())
}

/// The CPU the calling thread is running on right now.
///
/// # Errors
///
/// What `sched_getcpu(3)` reports.
pub fn current() -> io::Result<usize> {
    // SAFETY: no arguments.
    let cpu = syscall!(sched_getcpu())?;
    Ok(cpu as usize)
}

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    unsafe { mem::zeroed() }
}

fn is_set(cpu: usize, set: &libc::cpu_set_t) -> bool {
    // SAFETY: callers pass `cpu < CPU_SETSIZE`, so CPU_ISSET reads inside `set`.
    unsafe { libc::CPU_ISSET(cpu, set) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_include_the_current_one() {
        let cpus = allowed().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        assert!(cpus.contains(&current().unwrap()));
    }

    #[test]
    fn pinning_moves_the_thread() {
        let cpus = allowed().unwrap();
        let target = *cpus.last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(target).unwrap();
            assert_eq!(allowed().unwrap(), vec![target]);
            assert_eq!(current().unwrap(), target);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_out_of_range_is_an_error() {
        let err = pin_current_thread(libc::CPU_SETSIZE as usize).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }
}
