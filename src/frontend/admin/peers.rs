//! Who may hold a connection to the admin endpoint, so that one host cannot take every place: at
//! most `Limits::per_peer` connections from one peer (an IPv4 address, an IPv6 /64 — what one
//! host usually has — or, on a unix socket, one user), at most `Limits::total` in all. A new
//! connection over either limit takes the place of the oldest connection still sending its head
//! (of that peer, or of anyone when all are taken): a prober sends its head at once, so the
//! connections that go are the idle and the trickling ones. Connections whose head is in (being
//! answered) are never evicted; when every place is held by them, the new one is refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Where a connection comes from, as far as the limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    V4([u8; 4]),
    /// The /64 prefix of an IPv6 address.
    V6(u64),
    /// The uid of a unix-socket peer.
    User(u32),
    /// A peer the kernel did not name.
    Unknown,
}

impl Peer {
    pub fn of_ip(ip: IpAddr) -> Peer {
        match ip {
            IpAddr::V4(v4) => Peer::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Peer::V4(v4.octets()),
                None => Peer::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
}

/// Most connections at once, whatever the open-files limit.
pub const MAX_CONNECTIONS: usize = 1024;

impl Limits {
    /// The limits for an open-files limit of `nofile`: at most a quarter of it (the rest is the
    /// workers' sockets, pipes and pidfds), at most `MAX_CONNECTIONS`; one peer gets a
    /// sixteenth of that (64 of 1024), so fifteen sixteenths stay for the others.
    pub fn for_fd_limit(nofile: u64) -> Limits {
        let total = (nofile / 4).clamp(16, MAX_CONNECTIONS as u64) as usize;
        Limits {
            total,
            per_peer: (total / 16).max(4),
        }
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Take it, after closing this connection to make room, if any.
    Take { evict: Option<u64> },
    /// No room: every place it could take is held by a connection being answered.
    Refuse,
}

/// The open connections, by id (ids grow, so the smallest is the oldest).
pub struct Admission {
    limits: Limits,
    /// id → its peer, and whether it is still sending its head.
    open: BTreeMap<u64, (Peer, bool)>,
    per_peer: HashMap<Peer, usize>,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            open: BTreeMap::new(),
            per_peer: HashMap::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decides on connection `id` from `peer` (a larger id than any before), and records it
    /// when taken; an evicted connection is forgotten here, and the caller closes it.
    pub fn admit(&mut self, id: u64, peer: Peer) -> Admit {
        let mut evict = None;
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
            match self.oldest_reading(Some(peer)) {
                Some(victim) => evict = Some(victim),
                None => return Admit::Refuse,
            }
        } else if self.open.len() >= self.limits.total {
            match self.oldest_reading(None) {
                Some(victim) => evict = Some(victim),
                None => return Admit::Refuse,
            }
        }
        if let Some(victim) = evict {
            self.remove(victim);
        }
        self.open.insert(id, (peer, true));
        *self.per_peer.entry(peer).or_default() += 1;
        Admit::Take { evict }
    }

    /// The oldest connection still sending its head, of `peer` or of anyone.
    pub fn oldest_reading(&self, peer: Option<Peer>) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, (p, reading))| *reading && peer.is_none_or(|want| *p == want))
            .map(|(&id, _)| id)
    }

    /// Connection `id` sent its whole head: it is no longer evicted for a newcomer.
    pub fn head_read(&mut self, id: u64) {
        if let Some((_, reading)) = self.open.get_mut(&id) {
            *reading = false;
        }
    }

    pub fn remove(&mut self, id: u64) {
        if let Some((peer, _)) = self.open.remove(&id)
            && let Some(count) = self.per_peer.get_mut(&peer)
        {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        total: 8,
        per_peer: 3,
    };
    const A: Peer = Peer::V4([127, 0, 0, 2]);
    const B: Peer = Peer::V4([127, 0, 0, 1]);

    #[test]
    fn a_peer_over_its_share_evicts_its_own_oldest_idle_connection() {
        let mut admission = Admission::new(LIMITS);
        for id in 1..=3 {
            assert_eq!(admission.admit(id, A), Admit::Take { evict: None });
        }
        assert_eq!(admission.admit(4, A), Admit::Take { evict: Some(1) });
        assert_eq!(
            admission.admit(5, B),
            Admit::Take { evict: None },
            "others get in"
        );
        // Its connections being answered are kept; the oldest still reading goes.
        admission.head_read(2);
        assert_eq!(admission.admit(6, A), Admit::Take { evict: Some(3) });
        admission.head_read(4);
        admission.head_read(6);
        assert_eq!(
            admission.admit(7, A),
            Admit::Refuse,
            "all three being answered"
        );
        admission.remove(2);
        assert_eq!(admission.admit(8, A), Admit::Take { evict: None });
        assert_eq!(admission.len(), 4);
    }

    #[test]
    fn when_every_place_is_taken_the_oldest_connection_still_reading_goes() {
        let mut admission = Admission::new(LIMITS);
        let many: Vec<Peer> = (10..18).map(|i| Peer::V4([127, 0, 0, i])).collect();
        for (id, peer) in (1..).zip(&many) {
            assert_eq!(admission.admit(id, *peer), Admit::Take { evict: None });
        }
        admission.head_read(1);
        assert_eq!(admission.admit(9, B), Admit::Take { evict: Some(2) });
        assert_eq!(admission.admit(10, B), Admit::Take { evict: Some(3) });
        for id in 4..=10 {
            admission.head_read(id);
        }
        assert_eq!(admission.admit(11, A), Admit::Refuse);
        assert_eq!(admission.len(), 8);
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_peer_and_ipv6_counts_by_64() {
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(Peer::of_ip(v4), Peer::of_ip(mapped));
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Peer::of_ip(one), Peer::of_ip(other));
        assert_ne!(Peer::of_ip(one), Peer::of_ip(elsewhere));
    }

    #[test]
    fn limits_follow_the_open_files_limit() {
        assert_eq!(
            Limits::for_fd_limit(1 << 20),
            Limits {
                total: 1024,
                per_peer: 64
            }
        );
        assert_eq!(
            Limits::for_fd_limit(1024),
            Limits {
                total: 256,
                per_peer: 16
            }
        );
        assert_eq!(Limits::for_fd_limit(10).total, 16);
    }
}
