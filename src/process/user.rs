//! `--user USER[:GROUP]`: the identity workers run as. Resolved once, at start, from the user and
//! group databases (names or numbers): the uid, the gid (USER's primary group unless GROUP is
//! given) and USER's supplementary groups. The child drops to it before exec (`spawn`);
//! recluster keeps its own identity, so it can bind ports below 1024 and keep sockets across
//! reloads.

use std::ffi::{CStr, CString};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (USER's, from the group database; GROUP if given).
    pub groups: Vec<u32>,
}

impl Identity {
    /// `USER[:GROUP]`, each a name or a number; a usage message on error.
    pub fn resolve(spec: &str) -> Result<Identity, String> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err(format!("--user {spec}: write USER or USER:GROUP"));
        }
        let (name, uid, primary) = lookup_user(user)
            .ok_or_else(|| format!("--user {spec}: no user {user:?} on this system"))?;
        let gid = match group {
            Some(group) => lookup_group(group)
                .ok_or_else(|| format!("--user {spec}: no group {group:?} on this system"))?,
            None => primary,
        };
        let mut groups = supplementary_groups(&name, gid);
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        Ok(Identity {
            name,
            uid,
            gid,
            groups,
        })
    }
}

/// Whether this process may change its user and groups (root, or CAP_SETUID and CAP_SETGID).
pub fn may_switch() -> bool {
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_SETGID is capability 6, CAP_SETUID 7 (linux/capability.h).
    let (setgid, setuid) = (1u64 << 6, 1u64 << 7);
    effective & setgid != 0 && effective & setuid != 0
}

/// The name the user database gives `uid`, if any.
pub fn name_of(uid: u32) -> Option<String> {
    lookup_user(&uid.to_string()).map(|(name, _, _)| name)
}

/// (name, uid, primary gid) of a user name or number.
fn lookup_user(user: &str) -> Option<(String, u32, u32)> {
    let mut entry: libc::passwd = unsafe_zeroed();
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<u32>() {
        // SAFETY: getpwuid_r writes into `entry` and `buffer`, both valid for their sizes.
        Ok(uid) => unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        },
        Err(_) => {
            let name = CString::new(user).ok()?;
            // SAFETY: as above, with a NUL-terminated name.
            unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut found,
                )
            }
        }
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buffer`, NUL-terminated by getpw*_r.
    let name = unsafe { CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((name, entry.pw_uid, entry.pw_gid))
}

/// The gid of a group name or number.
fn lookup_group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let name = CString::new(group).ok()?;
    let mut entry: libc::group = unsafe_zeroed();
    let mut buffer = vec![0 as libc::c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `entry` and `buffer`, both valid for their sizes.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(entry.gr_gid)
}

/// The groups the group database lists `name` in (with `gid`).
fn supplementary_groups(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(name) else {
        return vec![gid];
    };
    let mut count: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let asked = count;
        // SAFETY: getgrouplist writes at most `count` gids into `groups` and the number found
        // into `count`.
        let rc =
            unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count as usize);
            return groups;
        }
        if count <= asked {
            count = asked * 2; // some libcs do not say how many there are
        }
        if count > 65_536 {
            return vec![gid];
        }
    }
}

/// A zeroed C struct (passwd, group): a valid out-parameter.
fn unsafe_zeroed<T>() -> T {
    // SAFETY: only used for plain C structs of integers and pointers, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers_and_refuses_unknown_ones() {
        let root = Identity::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        let by_number = Identity::resolve("0:0").unwrap();
        assert_eq!((by_number.name.as_str(), by_number.gid), ("root", 0));
        let err = Identity::resolve("no-such-user-here").unwrap_err();
        assert!(err.contains("no user"), "{err}");
        let err = Identity::resolve("root:no-such-group-here").unwrap_err();
        assert!(err.contains("no group"), "{err}");
        assert!(Identity::resolve("root:").is_err());
    }
}
