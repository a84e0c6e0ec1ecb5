//! Measures where `IORING_OP_SEND_ZC` starts to pay on this machine's network path: CPU time
//! of the sending thread per byte with a copying `send` and with `send_zc`, for message sizes
//! from 1 KiB to 1 MiB, over one TCP connection to a reader thread that discards what it gets.
//!
//! ```text
//! cargo run --release -p bidir-sys --example send_zc [-- --peer HOST:PORT] [--mib N]
//! ```
//!
//! Without `--peer` it measures loopback (the reader runs in this process). With `--peer` it
//! sends to a discard server elsewhere (e.g. `socat -u TCP-LISTEN:9000,fork,reuseaddr
//! /dev/null`), which is the measurement that sets `UringConfig::send_zc_threshold` for a real
//! network card. The sender keeps four sends in flight; a zero-copy send's buffer is reused
//! only after the kernel's notification that it let go of it.
//!
//! Output: one line per size: ns of CPU per KiB sent for each kind and the ratio zc / copy
//! (below 1.00: zero-copy is cheaper at that size), for the sending thread and for the whole
//! process (over loopback that includes the reader thread, which pays for the receive).
#![allow(clippy::print_stdout)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, types};

const IN_FLIGHT: usize = 4;

fn cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes into a live timespec.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of this thread and of the whole process (the reader included, when it is ours).
fn cpu_now() -> (Duration, Duration) {
    (cpu(libc::CLOCK_THREAD_CPUTIME_ID), cpu(libc::CLOCK_PROCESS_CPUTIME_ID))
}

/// Sends `total` bytes in messages of `size` through `stream`; returns the CPU time of the
/// sending thread and of the process.
fn run(
    stream: &TcpStream,
    size: usize,
    total: usize,
    zc: bool,
) -> io::Result<(Duration, Duration)> {
    let mut ring = IoUring::new(64)?;
    let bufs: Vec<Vec<u8>> = (0..IN_FLIGHT).map(|i| vec![i as u8; size]).collect();
    // Per buffer: the send's result is still to come, the notification is still to come.
    let mut pending = [(false, false); IN_FLIGHT];
    let mut sent = 0usize;
    let mut submitted = 0usize;
    let fd = types::Fd(stream.as_raw_fd());
    let start = cpu_now();
    while sent < total {
        for (i, buf) in bufs.iter().enumerate() {
            if pending[i] != (false, false) || submitted >= total {
                continue;
            }
            let entry = if zc {
                opcode::SendZc::new(fd, buf.as_ptr(), size as u32).build()
            } else {
                opcode::Send::new(fd, buf.as_ptr(), size as u32).build()
            };
            // SAFETY: `buf` lives until the end of this function and is not reused before
            // its send (and for zero-copy, its notification) has completed.
            unsafe { ring.submission().push(&entry.user_data(i as u64)) }
                .map_err(io::Error::other)?;
            pending[i] = (true, zc);
            submitted += size;
        }
        ring.submit_and_wait(1)?;
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            if cqueue::notif(cqe.flags()) {
                pending[i].1 = false;
                continue;
            }
            if cqe.result() < 0 {
                return Err(io::Error::from_raw_os_error(-cqe.result()));
            }
            let n = cqe.result() as usize;
            sent += n;
            if n < size {
                submitted -= size - n; // a short send: the rest goes again with the next one
            }
            pending[i].0 = false;
            if zc && !cqueue::more(cqe.flags()) {
                pending[i].1 = false; // no notification will follow
            }
        }
    }
    // Wait for the last notifications: the kernel may still hold the buffers.
    while pending.iter().any(|p| p.1) {
        ring.submit_and_wait(1)?;
        for cqe in ring.completion() {
            if cqueue::notif(cqe.flags()) {
                pending[cqe.user_data() as usize].1 = false;
            }
        }
    }
    let end = cpu_now();
    Ok((end.0 - start.0, end.1 - start.1))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> io::Result<()> {
    let mut peer: Option<SocketAddr> = None;
    let mut mib = 256usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--peer" => peer = args.next().and_then(|a| a.parse().ok()),
            "--mib" => mib = args.next().and_then(|a| a.parse().ok()).unwrap_or(mib),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown {arg}"))),
        }
    }
    let (stream, reader) = match peer {
        Some(addr) => (TcpStream::connect(addr)?, None),
        None => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let stream = TcpStream::connect(listener.local_addr()?)?;
            let (mut server, _) = listener.accept()?;
            let reader = std::thread::spawn(move || {
                // The reader on another core than the sender, where there is one.
                let cpus = bidir_sys::cpu::allowed().unwrap_or_default();
                if let Some(&cpu) = cpus.get(1) {
                    let _ = bidir_sys::cpu::pin_current_thread(cpu);
                }
                let mut buf = vec![0u8; 1 << 20];
                while matches!(server.read(&mut buf), Ok(n) if n > 0) {}
            });
            (stream, Some(reader))
        }
    };
    stream.set_nodelay(true)?;
    if let Some(&cpu) = bidir_sys::cpu::allowed().unwrap_or_default().first() {
        bidir_sys::cpu::pin_current_thread(cpu)?;
    }
    println!(
        "{:>9} | {:>12} {:>12} {:>8} | {:>12} {:>12} {:>8}",
        "size", "sender: copy", "zero-copy", "zc/copy", "process: copy", "zero-copy", "zc/copy"
    );
    for size in [1usize << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let total = (mib << 20) / size * size;
        let per_kib = |cpu: Duration| cpu.as_nanos() as f64 / ((total / 5) as f64 / 1024.0);
        // Interleave the two kinds five times and quote each one's median.
        let mut samples = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..5 {
            let (thread, process) = run(&stream, size, total / 5, false)?;
            samples[0].push(per_kib(thread));
            samples[1].push(per_kib(process));
            let (thread, process) = run(&stream, size, total / 5, true)?;
            samples[2].push(per_kib(thread));
            samples[3].push(per_kib(process));
        }
        let [copy, copy_all, zc, zc_all] = samples.map(median);
        println!(
            "{size:>9} | {copy:>12.0} {zc:>12.0} {:>8.2} | {copy_all:>12.0} {zc_all:>12.0} {:>8.2}",
            zc / copy,
            zc_all / copy_all
        );
    }
    drop(stream);
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    Ok(())
}
