//! CPU per small-frame send on N loopback TCP sockets: one `write` per socket against io_uring
//! `SEND`s submitted in batches, by descriptor and by registered ("fixed") file, alternating, in
//! one process (server and client ends both here; the client ends are drained between rounds,
//! never read while sending).
//!
//! Usage: [MT=1] loopback-send [SOCKETS=5000] [ROUNDS=20] [BATCH=256] [REPEATS=3]
//!
//! `MT=1` starts a second (parked) thread first, so that the process shares its descriptor table
//! as wsserver's threads do: the kernel's `fdget` then takes a reference on the socket's file for
//! every `write`, which a registered file avoids.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// A 66-byte websocket text frame: FIN + text opcode, length 64, 64 bytes of payload.
const FRAME: [u8; 66] = {
    let mut f = [b'x'; 66];
    f[0] = 0x81;
    f[1] = 64;
    f
};

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).map_or(default, |s| s.parse().expect("arguments are whole numbers"))
}

fn main() {
    let (sockets, rounds, batch, repeats) = (arg(1, 5000), arg(2, 20), arg(3, 256), arg(4, 3));
    assert!(batch > 0 && batch <= 4096, "BATCH is 1..=4096");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let mut senders = Vec::with_capacity(sockets);
    let mut receivers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let client = TcpStream::connect(addr).expect("connect (raise ulimit -n: two descriptors per socket)");
        let (server, _) = listener.accept().expect("accept");
        server.set_nodelay(true).expect("nodelay");
        server.set_nonblocking(true).expect("nonblocking");
        client.set_nonblocking(true).expect("nonblocking");
        senders.push(server);
        receivers.push(client);
    }
    let mut ring = io_uring::IoUring::new(4096).expect("io_uring_setup");
    let fds: Vec<i32> = senders.iter().map(|s| s.as_raw_fd()).collect();
    ring.submitter().register_files(&fds).expect("io_uring_register (files)");
    if std::env::var_os("MT").is_some() {
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    }
    let mut sink = vec![0u8; 1 << 16];
    let mut results: Vec<(&str, f64)> = Vec::new();
    const MODES: [&str; 3] = ["write", "io_uring", "fixed"];
    for _ in 0..repeats {
        for mode in MODES {
            let cpu0 = cpu_seconds();
            let wall0 = Instant::now();
            for _ in 0..rounds {
                if mode == "write" {
                    for s in &mut senders {
                        s.write_all(&FRAME).expect("write");
                    }
                } else {
                    for (c, chunk) in senders.chunks(batch).enumerate() {
                        {
                            let mut sq = ring.submission();
                            for (j, s) in chunk.iter().enumerate() {
                                let sqe = if mode == "fixed" {
                                    // Registered in `senders` order: the index is the position.
                                    let index = (c * batch + j) as u32;
                                    io_uring::opcode::Send::new(io_uring::types::Fixed(index), FRAME.as_ptr(), FRAME.len() as u32).build()
                                } else {
                                    io_uring::opcode::Send::new(io_uring::types::Fd(s.as_raw_fd()), FRAME.as_ptr(), FRAME.len() as u32).build()
                                };
                                // SAFETY: FRAME is static; the fd outlives the submission (its completion is awaited below).
                                unsafe { sq.push(&sqe).expect("submission queue has room") };
                            }
                        }
                        ring.submit_and_wait(chunk.len()).expect("io_uring_enter");
                        for cqe in ring.completion() {
                            assert_eq!(cqe.result(), FRAME.len() as i32, "a send was short or failed");
                        }
                    }
                }
            }
            let sends = (rounds * sockets) as f64;
            let per = (cpu_seconds() - cpu0) / sends * 1e6;
            println!("{mode:>8}: {per:.2} µs CPU per send, {:.2} µs wall per send", wall0.elapsed().as_secs_f64() / sends * 1e6);
            results.push((mode, per));
            for r in &mut receivers {
                while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
            }
        }
    }
    for mode in MODES {
        let mut v: Vec<f64> = results.iter().filter(|(m, _)| *m == mode).map(|(_, x)| *x).collect();
        v.sort_by(f64::total_cmp);
        println!("median {mode}: {:.2} µs CPU per send over {} repeats", v[v.len() / 2], v.len());
    }
}
