//! Steering new connections among the per-slot sockets of one `SO_REUSEPORT` group: a classic BPF
//! program (`SO_ATTACH_REUSEPORT_CBPF`: unprivileged, Linux ≥ 4.6) that maps each connection's
//! hash to one of the target sockets — the slots whose worker is ready — by its index in the
//! group. Replacing it is one `setsockopt`, atomic for the whole group.
//!
//! The index of a socket in the group is its position in the kernel's array: sockets join at the
//! end when they listen, and a closed one is replaced by the last (a swap-remove). recluster keeps
//! the index of each slot's socket (`socket::Members`), following the kernel's swap where it
//! closes one (`net.ipv4.tcp_migrate_req=1`), and steers again after; without groups, slots
//! listen in slot order and slot `i` is index `i` until then.
//!
//! The program: `A = hash` (or a random number where the packet has no hash), `A %= K` for K
//! targets, then the target by arithmetic over runs of consecutive targets: `if A < end of this
//! run { return A + (first target - first position) }`. The ready slots are one run when
//! all are ready, and a few more per dead or starting worker, so the program is short and every
//! target gets 1/K of the hashes exactly, however many there are. Should the runs not fit the
//! kernel's 4096 instructions (more than 1364 gaps), a chain of `if A == b return target[b]`
//! over at most `MAX_BUCKETS` buckets is used instead, which leaves targets past the last bucket
//! without new connections.
//!
//! `--steer client` loads the client's address (`SKF_NET_OFF`: the IP header, IPv4 or IPv6),
//! hashes it into one of `CLIENT_BUCKETS` buckets and looks the bucket's target up in a search
//! tree; `ClientTable` keeps each bucket's slot across changes so that only the clients of a slot
//! that leaves move. `--steer cpu` loads the CPU handling the connection (`SKF_AD_CPU`) and looks
//! up the ready workers pinned there, else falls through to the hash program above.

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

// More opcodes for `--steer client` and `cpu`: BPF_LD|BPF_B|BPF_ABS, BPF_ALU|BPF_AND|BPF_K,
// BPF_ALU|BPF_MUL|BPF_K, BPF_ALU|BPF_RSH|BPF_K, BPF_ALU|BPF_XOR|BPF_X, BPF_MISC|BPF_TAX,
// BPF_JMP|BPF_JA.
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_ALU_MUL_K: u16 = 0x24;
const BPF_ALU_RSH_K: u16 = 0x74;
const BPF_ALU_XOR_X: u16 = 0xac;
const BPF_MISC_TAX: u16 = 0x07;
const BPF_JMP_JA: u16 = 0x05;
/// Loads relative to the network header (the IP header), whatever the skb's data points at.
const SKF_NET_OFF: u32 = (-0x100000i32) as u32;
const SKF_AD_CPU: u32 = 36;
/// A jump to the program's default part, patched once the tree's length is known.
const TO_DEFAULT: u32 = u32::MAX;

/// `--steer client`: how many buckets a client's address hashes into (a power of two). Each
/// bucket belongs to one slot, so with more slots than this some get no client.
pub const CLIENT_BUCKETS: usize = 1024;
/// Fibonacci hashing's multiplier (2^32 / φ): consecutive addresses (a subnet) land evenly
/// spaced over the buckets.
const GOLDEN: u32 = 0x9E37_79B9;

/// A subtree's leaf: return this index, run this self-contained program, or jump to the default.
enum Leaf {
    Index(u32),
    Program(Vec<libc::sock_filter>),
    Default,
}

/// A search tree on `A` over `runs` (each the first value of a range of `A`, sorted; the first
/// must be 0): `A >= pivot` jumps over the left half. A conditional jump reaches 255
/// instructions at most; further, an unconditional one (`JA`) carries it.
fn tree(runs: Vec<(u32, Leaf)>) -> Vec<libc::sock_filter> {
    if runs.len() == 1 {
        return match runs.into_iter().next().expect("one run").1 {
            Leaf::Index(index) => vec![insn(BPF_RET_K, 0, 0, index)],
            Leaf::Program(prog) => prog,
            Leaf::Default => vec![insn(BPF_JMP_JA, 0, 0, TO_DEFAULT)],
        };
    }
    let mut runs = runs;
    let right_runs = runs.split_off(runs.len() / 2);
    let pivot = right_runs[0].0;
    let (left, right) = (tree(runs), tree(right_runs));
    let mut prog = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        Ok(skip) => prog.push(insn(BPF_JMP_JGE_K, skip, 0, pivot)),
        Err(_) => {
            prog.push(insn(BPF_JMP_JGE_K, 0, 1, pivot));
            prog.push(insn(BPF_JMP_JA, 0, 0, left.len() as u32));
        }
    }
    prog.extend(left);
    prog.extend(right);
    prog
}

/// `tree`, followed by `default`, with the tree's jumps to it patched in.
fn tree_then(runs: Vec<(u32, Leaf)>, default: Vec<libc::sock_filter>) -> Vec<libc::sock_filter> {
    let mut prog = tree(runs);
    let end = prog.len();
    for (pc, i) in prog.iter_mut().enumerate() {
        if i.code == BPF_JMP_JA && i.k == TO_DEFAULT {
            i.k = (end - pc - 1) as u32;
        }
    }
    prog.extend(default);
    prog
}

/// `A` = the bucket of the client's address (IPv4 or IPv6, from the IP header: a dual-stack
/// socket sees both): the address's words chained by multiplication and xor, Fibonacci-hashed.
fn client_bucket() -> Vec<libc::sock_filter> {
    let shift = 32 - CLIENT_BUCKETS.trailing_zeros();
    let mut prog = vec![
        insn(BPF_LD_B_ABS, 0, 0, SKF_NET_OFF),
        insn(BPF_ALU_AND_K, 0, 0, 0xf0),
        // IPv6: skip IPv4's two instructions and the jump past IPv6.
        insn(BPF_JMP_JEQ_K, 0, 3, 0x40),
        insn(BPF_LD_W_ABS, 0, 0, SKF_NET_OFF + 12),
        insn(BPF_ALU_MUL_K, 0, 0, GOLDEN),
        insn(BPF_JMP_JA, 0, 0, 14),
        insn(BPF_LD_W_ABS, 0, 0, SKF_NET_OFF + 8),
        insn(BPF_ALU_MUL_K, 0, 0, GOLDEN),
    ];
    for word in 1..4 {
        prog.extend([
            insn(BPF_MISC_TAX, 0, 0, 0),
            insn(BPF_LD_W_ABS, 0, 0, SKF_NET_OFF + 8 + 4 * word),
            insn(BPF_ALU_XOR_X, 0, 0, 0),
            insn(BPF_ALU_MUL_K, 0, 0, GOLDEN),
        ]);
    }
    prog.push(insn(BPF_ALU_RSH_K, 0, 0, shift));
    prog
}

/// `--steer client`: the index for each bucket (`CLIENT_BUCKETS` of them), looked up by the
/// client's address. `None` where it would not fit the kernel's limit.
pub fn client_program(by_bucket: &[u32]) -> Option<Vec<libc::sock_filter>> {
    assert_eq!(by_bucket.len(), CLIENT_BUCKETS);
    let mut runs: Vec<(u32, Leaf)> = Vec::new();
    for (bucket, &index) in by_bucket.iter().enumerate() {
        if !matches!(runs.last(), Some((_, Leaf::Index(last))) if *last == index) {
            runs.push((bucket as u32, Leaf::Index(index)));
        }
    }
    let mut prog = client_bucket();
    prog.extend(tree(runs));
    (prog.len() <= MAX_INSNS).then_some(prog)
}

/// `--steer cpu`: a connection handled on a CPU that `by_cpu` names goes to that CPU's indices
/// (spread by hash if several); any other to the hash choice among `targets`. `None` where it
/// would not fit the kernel's limit.
pub fn cpu_program(by_cpu: &[(u32, Vec<u32>)], targets: &[u32]) -> Option<Vec<libc::sock_filter>> {
    let mut by_cpu: Vec<&(u32, Vec<u32>)> = by_cpu.iter().filter(|(_, t)| !t.is_empty()).collect();
    by_cpu.sort_by_key(|(cpu, _)| *cpu);
    by_cpu.dedup_by_key(|(cpu, _)| *cpu);
    let mut runs: Vec<(u32, Leaf)> = Vec::new();
    for (cpu, indices) in by_cpu {
        // The CPUs before this one that have no worker: the hash choice.
        let next = runs.last().map_or(0, |&(start, _)| start + 1);
        if *cpu > next {
            runs.push((next, Leaf::Default));
        }
        let leaf = match indices.as_slice() {
            [one] => Leaf::Index(*one),
            many => Leaf::Program(program(many)),
        };
        runs.push((*cpu, leaf));
    }
    match runs.last() {
        Some(&(last, _)) if last < u32::MAX => runs.push((last + 1, Leaf::Default)),
        Some(_) => {}
        None => runs.push((0, Leaf::Default)),
    }
    let mut prog = vec![insn(
        BPF_LD_W_ABS,
        0,
        0,
        SKF_AD_OFF.wrapping_add(SKF_AD_CPU),
    )];
    prog.extend(tree_then(runs, program(targets)));
    (prog.len() <= MAX_INSNS).then_some(prog)
}

/// What one listener's new connections are steered among: the slots whose worker is ready, and
/// the members (every slot that exists, ready or not), whose share of clients `--steer client`
/// keeps for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub ready: Vec<u32>,
    pub members: Vec<u32>,
}

/// `--steer client`: which slot each bucket of client addresses goes to, kept from one change
/// to the next so that few clients move.
///
/// Each bucket has a home among the member slots (those that exist, ready or not): every member
/// holds `CLIENT_BUCKETS / M` of them, give or take one, in a few contiguous ranges. A member
/// that leaves (scale-down) hands its buckets to those below their share; one that joins takes
/// its share from those above theirs, the buckets at the end of their ranges. A bucket whose
/// home is not ready (dead, starting, leaving) stays where it went last if that slot is ready,
/// else goes to the ready slot ranked first for it (rendezvous hashing, computed here, not in
/// the program), so a dead slot's clients spread over the others and only they move; they go
/// back when it is ready again.
#[derive(Debug, Clone)]
pub struct ClientTable {
    home: Vec<u32>,
    live: Vec<u32>,
}

const NO_SLOT: u32 = u32::MAX;

impl Default for ClientTable {
    fn default() -> Self {
        ClientTable {
            home: vec![NO_SLOT; CLIENT_BUCKETS],
            live: vec![NO_SLOT; CLIENT_BUCKETS],
        }
    }
}

impl ClientTable {
    /// Follows a change of the members and of the ready slots among them (neither empty); the
    /// slot of each bucket now.
    pub fn update(&mut self, members: &[u32], ready: &[u32]) -> &[u32] {
        self.rebalance(members);
        let ready_set: std::collections::HashSet<u32> = ready.iter().copied().collect();
        for bucket in 0..CLIENT_BUCKETS {
            let (home, last) = (self.home[bucket], self.live[bucket]);
            self.live[bucket] = if ready_set.contains(&home) {
                home
            } else if ready_set.contains(&last) {
                last
            } else {
                *ready
                    .iter()
                    .max_by_key(|&&slot| rank(bucket as u32, slot))
                    .expect("a ready slot")
            };
        }
        &self.live
    }

    /// Each member's share of buckets, moving as few as can be.
    fn rebalance(&mut self, members: &[u32]) {
        if members.is_empty() {
            return;
        }
        let mut owned: std::collections::BTreeMap<u32, Vec<usize>> =
            members.iter().map(|&m| (m, Vec::new())).collect();
        let mut free = Vec::new();
        for (bucket, home) in self.home.iter().enumerate() {
            match owned.get_mut(home) {
                Some(buckets) => buckets.push(bucket),
                None => free.push(bucket),
            }
        }
        // Shares: those holding the most get the remainder's extra bucket.
        let (base, extra) = (CLIENT_BUCKETS / owned.len(), CLIENT_BUCKETS % owned.len());
        let mut by_size: Vec<u32> = owned.keys().copied().collect();
        by_size.sort_by_key(|m| std::cmp::Reverse(owned[m].len()));
        let share: std::collections::HashMap<u32, usize> = by_size
            .iter()
            .enumerate()
            .map(|(i, &m)| (m, base + usize::from(i < extra)))
            .collect();
        for (member, buckets) in owned.iter_mut() {
            while buckets.len() > share[member] {
                free.push(buckets.pop().expect("over its share"));
            }
        }
        free.sort_unstable();
        // A free bucket goes first to where its clients are now, if that member is short.
        let mut left = Vec::new();
        for bucket in free {
            let now = self.live[bucket];
            match owned.get_mut(&now) {
                Some(buckets) if buckets.len() < share[&now] => buckets.push(bucket),
                _ => left.push(bucket),
            }
        }
        let mut left = left.into_iter();
        for (member, buckets) in owned.iter_mut() {
            while buckets.len() < share[member] {
                buckets.push(left.next().expect("the shares add up"));
            }
        }
        for (&member, buckets) in &owned {
            for &bucket in buckets {
                self.home[bucket] = member;
            }
        }
    }
}

/// Rendezvous hashing's rank of `slot` for `bucket`: the highest ready one takes it.
fn rank(bucket: u32, slot: u32) -> u64 {
    let mut x = (u64::from(bucket) << 32 | u64::from(slot)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
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

    /// What a program may read of a connection's first packet.
    #[derive(Default)]
    struct Packet {
        hash: u32,
        random: u32,
        cpu: u32,
        /// The IP header.
        net: Vec<u8>,
    }

    /// Runs a program the way the kernel would for this packet: the index it returns.
    fn exec(prog: &[libc::sock_filter], packet: &Packet) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut pc = 0;
        let net = |k: u32, len: usize| -> u32 {
            let at = k.wrapping_sub(SKF_NET_OFF) as usize;
            packet.net[at..at + len]
                .iter()
                .fold(0, |v, &b| v << 8 | u32::from(b))
        };
        loop {
            assert!(pc < prog.len(), "ran off the end");
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS if i.k == SKF_AD_OFF.wrapping_add(SKF_AD_RXHASH) => a = packet.hash,
                BPF_LD_W_ABS if i.k == SKF_AD_OFF.wrapping_add(SKF_AD_RANDOM) => a = packet.random,
                BPF_LD_W_ABS if i.k == SKF_AD_OFF.wrapping_add(SKF_AD_CPU) => a = packet.cpu,
                BPF_LD_W_ABS => a = net(i.k, 4),
                BPF_LD_B_ABS => a = net(i.k, 1),
                BPF_ALU_MOD_K => a %= i.k,
                BPF_ALU_ADD_K => a = a.wrapping_add(i.k),
                BPF_ALU_MUL_K => a = a.wrapping_mul(i.k),
                BPF_ALU_AND_K => a &= i.k,
                BPF_ALU_RSH_K => a >>= i.k,
                BPF_ALU_XOR_X => a ^= x,
                BPF_MISC_TAX => x = a,
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                BPF_JMP_JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                BPF_RET_K => return i.k,
                BPF_RET_A => return a,
                other => panic!("unexpected instruction {other:#x}"),
            }
        }
    }

    /// Runs a program for a packet with this hash (and this random number, should it ask).
    fn run(prog: &[libc::sock_filter], hash: u32, random: u32) -> u32 {
        let packet = Packet {
            hash,
            random,
            ..Packet::default()
        };
        exec(prog, &packet)
    }

    /// An IP header from this source address, as far as the program reads it.
    fn from(source: std::net::IpAddr) -> Packet {
        let mut net = vec![0u8; 40];
        match source {
            std::net::IpAddr::V4(v4) => {
                net[0] = 0x45;
                net[12..16].copy_from_slice(&v4.octets());
            }
            std::net::IpAddr::V6(v6) => {
                net[0] = 0x60;
                net[8..24].copy_from_slice(&v6.octets());
            }
        }
        Packet {
            net,
            hash: 12345,
            ..Packet::default()
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

    /// The slot each bucket goes to, in a table as `update` leaves it.
    fn table_after(table: &mut ClientTable, members: &[u32], ready: &[u32]) -> Vec<u32> {
        table.update(members, ready).to_vec()
    }

    fn moved(before: &[u32], after: &[u32]) -> usize {
        before.iter().zip(after).filter(|(a, b)| a != b).count()
    }

    fn shares(table: &[u32], slots: u32) -> Vec<usize> {
        (0..slots)
            .map(|s| table.iter().filter(|&&t| t == s).count())
            .collect()
    }

    #[test]
    fn client_buckets_move_only_with_the_slot_that_leaves_and_about_one_share_on_scale_up() {
        let mut table = ClientTable::default();
        let four = table_after(&mut table, &[0, 1, 2, 3], &[0, 1, 2, 3]);
        assert_eq!(shares(&four, 4), [256; 4], "an even share each");
        // Slot 2 dies: only its buckets move, spread over the others.
        let dead = table_after(&mut table, &[0, 1, 2, 3], &[0, 1, 3]);
        for (b, (&before, &after)) in four.iter().zip(&dead).enumerate() {
            assert!(
                before == after || before == 2,
                "bucket {b}: {before} -> {after}"
            );
            assert_ne!(after, 2);
        }
        let spread = shares(&dead, 4);
        assert!(
            spread.iter().all(|&n| n == 0 || (320..=384).contains(&n)),
            "{spread:?}"
        );
        // Its replacement is ready: exactly its buckets come back.
        assert_eq!(table_after(&mut table, &[0, 1, 2, 3], &[0, 1, 2, 3]), four);
        // Scale up by one: the new slot takes its share (1/5), the others keep the rest.
        let starting = table_after(&mut table, &[0, 1, 2, 3, 4], &[0, 1, 2, 3]);
        assert_eq!(starting, four, "nothing moves while the new slot starts");
        let five = table_after(&mut table, &[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4]);
        assert_eq!(moved(&four, &five), 204, "1024 / 5");
        assert!(shares(&five, 5).iter().all(|&n| n == 204 || n == 205));
        // Scale down again: only the removed slot's buckets move.
        let back = table_after(&mut table, &[0, 1, 2, 3], &[0, 1, 2, 3]);
        assert_eq!(moved(&five, &back), 204);
        assert_eq!(shares(&back, 4), [256; 4]);
    }

    #[test]
    fn a_client_address_picks_its_bucket_and_consecutive_ones_spread_evenly() {
        let by_bucket: Vec<u32> = (0..CLIENT_BUCKETS as u32)
            .map(|b| b * 4 / CLIENT_BUCKETS as u32)
            .collect();
        let prog = client_program(&by_bucket).unwrap();
        assert!(prog.len() < 64, "four runs: {}", prog.len());
        let ip = |text: &str| from(text.parse().unwrap());
        // Not the port nor the connection's hash: the same address, whatever the hash.
        let mut a = ip("192.0.2.7");
        let first = exec(&prog, &a);
        a.hash = 999;
        assert_eq!(exec(&prog, &a), first);
        // 64 consecutive addresses: 16 each (Fibonacci hashing spaces them evenly).
        for base in ["127.0.0.2", "10.1.200.0", "2001:db8::1"] {
            let mut counts = [0u32; 4];
            for k in 0..64u32 {
                let address = match base.parse::<std::net::IpAddr>().unwrap() {
                    std::net::IpAddr::V4(v4) => {
                        std::net::IpAddr::from((u32::from(v4) + k).to_be_bytes())
                    }
                    std::net::IpAddr::V6(v6) => {
                        std::net::IpAddr::from((u128::from(v6) + u128::from(k)).to_be_bytes())
                    }
                };
                counts[exec(&prog, &from(address)) as usize] += 1;
            }
            let (max, min) = (counts.iter().max().unwrap(), counts.iter().min().unwrap());
            assert!(*max <= 17 && *min >= 15, "{base}: {counts:?}");
        }
        // A table in many pieces (every bucket its own run) still fits, as a search tree.
        let scattered: Vec<u32> = (0..CLIENT_BUCKETS as u32).map(|b| b % 7).collect();
        let prog = client_program(&scattered).unwrap();
        assert!(prog.len() <= MAX_INSNS);
        for text in ["127.0.0.2", "198.51.100.9", "::1", "fe80::1234"] {
            let address: std::net::IpAddr = text.parse().unwrap();
            let packet = from(address);
            let bucket = match address {
                std::net::IpAddr::V4(v4) => u32::from(v4).wrapping_mul(GOLDEN) >> 22,
                std::net::IpAddr::V6(v6) => {
                    let o = v6.octets();
                    let w = |i: usize| u32::from_be_bytes(o[4 * i..4 * i + 4].try_into().unwrap());
                    (1..4).fold(w(0).wrapping_mul(GOLDEN), |h, i| {
                        (h ^ w(i)).wrapping_mul(GOLDEN)
                    }) >> 22
                }
            };
            assert_eq!(exec(&prog, &packet), bucket % 7, "{text}");
        }
    }

    #[test]
    fn a_connection_goes_to_the_worker_of_its_cpu_else_to_the_hash_choice() {
        // Indices 0..4 ready; CPU 1 has index 3, CPU 3 has indices 0 and 2; CPUs 0, 2, 4+ none.
        let by_cpu = vec![(1, vec![3]), (3, vec![0, 2])];
        let prog = cpu_program(&by_cpu, &[0, 1, 2, 3]).unwrap();
        let on = |cpu: u32, hash: u32| {
            exec(
                &prog,
                &Packet {
                    cpu,
                    hash,
                    ..Packet::default()
                },
            )
        };
        for hash in 1..100 {
            assert_eq!(on(1, hash), 3);
            assert!([0, 2].contains(&on(3, hash)));
            for cpu in [0, 2, 4, 1000] {
                assert_eq!(on(cpu, hash), hash % 4, "cpu {cpu}: the hash choice");
            }
        }
        let both: std::collections::BTreeSet<u32> = (1..100).map(|h| on(3, h)).collect();
        assert_eq!(
            both.into_iter().collect::<Vec<_>>(),
            [0, 2],
            "spread by hash"
        );
        // Every CPU of a big machine has its worker: a tree, within the limit.
        let many: Vec<(u32, Vec<u32>)> = (0..1500).map(|c| (c, vec![c])).collect();
        let targets: Vec<u32> = (0..1500).collect();
        let prog = cpu_program(&many, &targets).unwrap();
        assert_eq!(
            exec(
                &prog,
                &Packet {
                    cpu: 777,
                    ..Packet::default()
                }
            ),
            777
        );
        assert_eq!(
            exec(
                &prog,
                &Packet {
                    cpu: 1500,
                    hash: 5,
                    ..Packet::default()
                }
            ),
            5
        );
    }

    /// A reuseport group of `n` listening sockets on a free port of `ip` (nonblocking).
    fn group(ip: std::net::IpAddr, n: usize) -> (Vec<socket2::Socket>, u16) {
        use socket2::{Domain, Socket, Type};
        let mut port = 0;
        let sockets = (0..n)
            .map(|_| {
                let address = std::net::SocketAddr::new(ip, port);
                let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).unwrap();
                if ip.is_ipv6() {
                    socket.set_only_v6(false).unwrap();
                }
                socket.set_reuse_port(true).unwrap();
                socket.bind(&address.into()).unwrap();
                socket.listen(64).unwrap();
                socket.set_nonblocking(true).unwrap();
                port = socket.local_addr().unwrap().as_socket().unwrap().port();
                socket
            })
            .collect();
        (sockets, port)
    }

    /// Which of `sockets` accepts the connection just made.
    fn accepted_by(sockets: &[socket2::Socket]) -> usize {
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
    }

    /// A connection to `port` of `to` from `source`.
    fn connect_from(source: std::net::IpAddr, to: std::net::IpAddr, port: u16) -> socket2::Socket {
        use socket2::{Domain, Socket, Type};
        let socket =
            Socket::new(Domain::for_address((to, port).into()), Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::new(source, 0).into())
            .unwrap();
        socket
            .connect(&std::net::SocketAddr::new(to, port).into())
            .unwrap();
        socket
    }

    #[test]
    fn the_kernel_steers_by_the_client_address_as_the_program_says() {
        use std::os::fd::AsRawFd;
        let by_bucket: Vec<u32> = (0..CLIENT_BUCKETS as u32).map(|b| b % 3).collect();
        let prog = client_program(&by_bucket).unwrap();
        let v4 = |last: u8| std::net::IpAddr::from([127, 0, 0, last]);
        // IPv4 on an IPv4 socket, and on a dual-stack one (the IP header is IPv4's there too).
        for listen in [v4(1), std::net::Ipv6Addr::UNSPECIFIED.into()] {
            let (sockets, port) = group(listen, 3);
            attach(sockets[0].as_raw_fd(), &prog).unwrap();
            for last in 2..12 {
                let expected = exec(&prog, &from(v4(last))) as usize;
                for _ in 0..5 {
                    let _client = connect_from(v4(last), v4(1), port);
                    assert_eq!(
                        accepted_by(&sockets),
                        expected,
                        "127.0.0.{last} on {listen}"
                    );
                }
            }
        }
        let (sockets, port) = group(std::net::Ipv6Addr::LOCALHOST.into(), 3);
        attach(sockets[0].as_raw_fd(), &prog).unwrap();
        let one = std::net::Ipv6Addr::LOCALHOST.into();
        let expected = exec(&prog, &from(one)) as usize;
        for _ in 0..5 {
            let _client = connect_from(one, one, port);
            assert_eq!(accepted_by(&sockets), expected, "::1");
        }
    }

    #[test]
    fn the_kernel_steers_by_the_cpu_that_handles_the_connection() {
        use std::os::fd::AsRawFd;
        let Some(cpus) = crate::cpu::cpuset::CpuSet::of_this_process() else {
            return;
        };
        let cpus: Vec<usize> = cpus.iter().take(4).collect();
        let (sockets, port) = group(std::net::IpAddr::from([127, 0, 0, 1]), cpus.len() + 1);
        // CPU cpus[i] -> index i + 1 (index 0 is the hash choice's only target).
        let by_cpu: Vec<(u32, Vec<u32>)> = cpus
            .iter()
            .enumerate()
            .map(|(i, &c)| (c as u32, vec![i as u32 + 1]))
            .collect();
        attach(sockets[0].as_raw_fd(), &cpu_program(&by_cpu, &[0]).unwrap()).unwrap();
        for (i, &cpu) in cpus.iter().enumerate() {
            let landed = std::thread::spawn(move || {
                let set = crate::cpu::cpuset::CpuSet::from_cpus([cpu]).to_libc();
                // SAFETY: sets this thread's affinity from a valid cpu_set_t.
                let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
                assert_eq!(rc, 0);
                // Loopback handles the SYN on the sending CPU.
                (0..5)
                    .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            for _ in &landed {
                assert_eq!(accepted_by(&sockets), i + 1, "a client on CPU {cpu}");
            }
        }
    }
}
