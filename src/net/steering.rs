//! Steering new connections among the per-slot sockets of one `SO_REUSEPORT` group: a classic BPF
//! program (`SO_ATTACH_REUSEPORT_CBPF`: unprivileged, Linux ≥ 4.6) that maps each connection's
//! hash to one of the target sockets — the slots whose worker is ready — by its index in the
//! group. Replacing it is one `setsockopt`, atomic for the whole group.
//!
//! The index of a socket in the group is its position in the kernel's array: sockets join at the
//! end when they listen, and a closed one is replaced by the last (a swap-remove). recluster keeps
//! the index of each slot's socket (`socket::Members`) and never closes one while it runs, so the
//! indices hold; without groups, slots listen in slot order and slot `i` is index `i`.
//!
//! The program: `A = hash` (or a random number where the packet has no hash), `A %= K` for K
//! targets, then the target by arithmetic over runs of consecutive targets: `if A < end of this
//! run { return A + (first target - first position) }`. The ready slots are one run when
//! all are ready, and a few more per dead or starting worker, so the program is short and every
//! target gets 1/K of the hashes exactly, however many there are. Should the runs not fit the
//! kernel's 4096 instructions (more than 1364 gaps), a chain of `if A == b return target[b]`
//! over at most `MAX_BUCKETS` buckets is used instead, which leaves targets past the last bucket
//! without new connections.

use std::io;
use std::os::fd::RawFd;

/// The kernel's limit on a classic BPF program.
const MAX_INSNS: usize = 4096;

/// The bucket chain's limit: two instructions per bucket and five around them.
pub const MAX_BUCKETS: usize = 2040;

const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
const SKF_AD_RXHASH: u32 = 32;
const SKF_AD_RANDOM: u32 = 56;

// Opcodes: class | size/op | mode/source (BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
// BPF_ALU|BPF_MOD|BPF_K, BPF_RET|BPF_K).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_ALU_MOD_K: u16 = 0x94;
const BPF_ALU_ADD_K: u16 = 0x04;
const BPF_RET_K: u16 = 0x06;
const BPF_RET_A: u16 = 0x16;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// `A` = the connection's hash (a random number where there is none) modulo `k`.
fn hash_mod(k: usize) -> Vec<libc::sock_filter> {
    vec![
        insn(BPF_LD_W_ABS, 0, 0, SKF_AD_OFF.wrapping_add(SKF_AD_RXHASH)),
        // No hash (some NICs and paths leave it 0): a random number instead.
        insn(BPF_JMP_JEQ_K, 0, 1, 0),
        insn(BPF_LD_W_ABS, 0, 0, SKF_AD_OFF.wrapping_add(SKF_AD_RANDOM)),
        insn(BPF_ALU_MOD_K, 0, 0, k as u32),
    ]
}

/// A program that sends each new connection to one of `targets` (group indices), spread by the
/// connection's hash. `targets` must not be empty.
pub fn program(targets: &[u32]) -> Vec<libc::sock_filter> {
    assert!(!targets.is_empty(), "a steering program needs a target");
    let runs = runs(targets);
    if 4 + 3 * runs.len() <= MAX_INSNS {
        by_runs(targets.len(), &runs)
    } else {
        by_buckets(targets)
    }
}

/// Runs of consecutive targets: (the position of the first in `targets`, the first, how many).
fn runs(targets: &[u32]) -> Vec<(u32, u32, u32)> {
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for (position, &target) in targets.iter().enumerate() {
        match runs.last_mut() {
            Some((_, first, len)) if first.checked_add(*len) == Some(target) => *len += 1,
            _ => runs.push((position as u32, target, 1)),
        }
    }
    runs
}

/// `A % K` lands in one run's positions; the target is the position moved by the run's offset.
fn by_runs(k: usize, runs: &[(u32, u32, u32)]) -> Vec<libc::sock_filter> {
    let mut prog = hash_mod(k);
    for (i, &(position, first, len)) in runs.iter().enumerate() {
        if i + 1 < runs.len() {
            // Past this run: skip its two instructions.
            prog.push(insn(BPF_JMP_JGE_K, 2, 0, position + len));
        }
        prog.push(insn(BPF_ALU_ADD_K, 0, 0, first.wrapping_sub(position)));
        prog.push(insn(BPF_RET_A, 0, 0, 0));
    }
    prog
}

/// `if A == b return target[b]` for each bucket: for targets too scattered for `by_runs`.
fn by_buckets(targets: &[u32]) -> Vec<libc::sock_filter> {
    let buckets = targets.len().min(MAX_BUCKETS);
    let mut prog = hash_mod(buckets);
    for bucket in 0..buckets - 1 {
        prog.push(insn(BPF_JMP_JEQ_K, 0, 1, bucket as u32));
        prog.push(insn(BPF_RET_K, 0, 0, targets[bucket % targets.len()]));
    }
    prog.push(insn(
        BPF_RET_K,
        0,
        0,
        targets[(buckets - 1) % targets.len()],
    ));
    prog
}

/// Whether this kernel (and any seccomp filter) lets recluster attach a steering program: tried
/// on a socket of its own, bound to a free loopback port.
pub fn supported() -> bool {
    use std::os::fd::AsRawFd;
    let probe = || -> io::Result<()> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_reuse_port(true)?;
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        attach(socket.as_raw_fd(), &program(&[0]))
    };
    probe().is_ok()
}

/// Attaches `prog` to the reuseport group of `fd` (replacing any program it had).
pub fn attach(fd: RawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: setsockopt reads a valid sock_fprog whose filter points at `prog`, alive for the
    // call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program the way the kernel would for a packet with this hash (and this random
    /// number, should it ask): the index it returns.
    fn run(prog: &[libc::sock_filter], hash: u32, random: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS if i.k == SKF_AD_OFF.wrapping_add(SKF_AD_RXHASH) => a = hash,
                BPF_LD_W_ABS if i.k == SKF_AD_OFF.wrapping_add(SKF_AD_RANDOM) => a = random,
                BPF_ALU_MOD_K => a %= i.k,
                BPF_ALU_ADD_K => a = a.wrapping_add(i.k),
                BPF_JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                BPF_JMP_JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                BPF_RET_K => return i.k,
                BPF_RET_A => return a,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    #[test]
    fn every_hash_goes_to_a_target_and_targets_share_evenly() {
        let targets = [0, 2, 3, 7];
        let prog = program(&targets);
        let mut counts = [0u32; 8];
        for hash in 1..=40_000u32 {
            counts[run(&prog, hash.wrapping_mul(2_654_435_761), 0) as usize] += 1;
        }
        assert_eq!(
            counts[1] + counts[4] + counts[5] + counts[6],
            0,
            "{counts:?}"
        );
        for &t in &targets {
            assert_eq!(counts[t as usize], 10_000, "{counts:?}");
        }
    }

    #[test]
    fn this_kernel_takes_a_steering_program() {
        // The machines the tests run on do (Linux >= 4.6, no seccomp filter on the tests).
        assert!(supported());
    }

    #[test]
    fn a_packet_without_a_hash_is_spread_by_a_random_number() {
        let prog = program(&[5, 6]);
        assert_eq!(run(&prog, 0, 0), 5);
        assert_eq!(run(&prog, 0, 1), 6);
    }

    /// How many of `hashes` consecutive hashes each index gets.
    fn spread(prog: &[libc::sock_filter], hashes: u32, indices: usize) -> Vec<u32> {
        let mut counts = vec![0u32; indices];
        for hash in 1..=hashes {
            counts[run(prog, hash, 0) as usize] += 1;
        }
        counts
    }

    #[test]
    fn thousands_of_ready_workers_each_get_their_share_in_a_short_program() {
        let all: Vec<u32> = (0..5000).collect();
        let prog = program(&all);
        assert_eq!(prog.len(), 6, "one run: hash % K, then + 0");
        assert!(
            spread(&prog, 50_000, 5000).iter().all(|&n| n == 10),
            "every one gets 1/K"
        );
        // Two of them dead: three runs, and neither dead one gets a connection.
        let ready: Vec<u32> = (0..5000).filter(|&i| i != 17 && i != 4000).collect();
        let prog = program(&ready);
        assert_eq!(prog.len(), 4 + 3 * 3 - 1);
        let counts = spread(&prog, 4998 * 3, 5000);
        assert_eq!((counts[17], counts[4000]), (0, 0));
        assert!(
            ready.iter().all(|&i| counts[i as usize] == 3),
            "the others evenly"
        );
    }

    #[test]
    fn targets_too_scattered_for_runs_fall_back_to_buckets_within_the_kernels_limit() {
        let every_other: Vec<u32> = (0..6000).step_by(2).collect();
        let prog = program(&every_other);
        assert!(prog.len() <= MAX_INSNS, "{}", prog.len());
        assert_eq!(run(&prog, 12_345, 0) % 2, 0, "an even target");
        assert_eq!(program(&[9]).len(), 6);
        assert_eq!(run(&program(&[9]), 77, 0), 9);
    }

    #[test]
    fn the_kernel_follows_the_program_and_a_closed_member_is_replaced_by_the_last() {
        use socket2::{Domain, Socket, Type};
        use std::net::SocketAddr;
        let group: Vec<Socket> = (0..3)
            .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
            .collect();
        let mut port = 0;
        for socket in &group {
            socket.set_reuse_port(true).unwrap();
            socket
                .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            socket.listen(16).unwrap();
            socket.set_nonblocking(true).unwrap();
            port = socket.local_addr().unwrap().as_socket().unwrap().port();
        }
        use std::os::fd::AsRawFd;
        let lands_on = |sockets: &[&Socket], target: u32| -> usize {
            attach(sockets[0].as_raw_fd(), &program(&[target])).unwrap();
            let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                for (i, s) in sockets.iter().enumerate() {
                    if s.accept().is_ok() {
                        return i;
                    }
                }
                assert!(std::time::Instant::now() < deadline, "no socket got it");
                std::thread::yield_now();
            }
        };
        let all: Vec<&Socket> = group.iter().collect();
        for target in 0..3 {
            assert_eq!(
                lands_on(&all, target),
                target as usize,
                "index = listen order"
            );
        }
        // Two runs (a jump over the first): the kernel accepts it, and follows it.
        for (targets, expected) in [([0u32, 2], [0usize, 2]), ([1, 2], [1, 2])] {
            attach(all[0].as_raw_fd(), &program(&targets)).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..40 {
                let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                'accepted: loop {
                    for (i, s) in all.iter().enumerate() {
                        if s.accept().is_ok() {
                            seen.insert(i);
                            break 'accepted;
                        }
                    }
                    assert!(std::time::Instant::now() < deadline, "no socket got it");
                    std::thread::yield_now();
                }
            }
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
        }
        // Close the middle one: the last takes its index.
        let [first, middle, last]: [Socket; 3] = group.try_into().unwrap();
        drop(middle);
        let left = [&first, &last];
        assert_eq!(lands_on(&left, 1), 1, "index 1 is now the last socket");
        assert_eq!(lands_on(&left, 0), 0);
    }
}
