//! Interface and neighbour operations the migration needs, done in-process with ioctls (no
//! `ip` command: spawning one costs milliseconds of freeze). All of them act on the network
//! namespace of the calling thread.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A MAC address.
pub type Mac = [u8; 6];

/// Format a MAC as `02:42:c0:a8:0c:02`.
pub fn mac_to_string(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `02:42:c0:a8:0c:02`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn dgram_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2), checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last("socket (ioctl)"));
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(Error::BadIfName { name: name.into() });
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn get_flags(fd: &OwnedFd, name: &str) -> Result<libc::c_short> {
    let mut r = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut r) } != 0 {
        return Err(Error::last("SIOCGIFFLAGS"));
    }
    // SAFETY: the kernel filled the flags member.
    Ok(unsafe { r.ifr_ifru.ifru_flags })
}

/// Set `name` admin-up or admin-down. Down is how the source isolates itself: once it
/// returns, no packet reaches the namespace's sockets and its carrier is gone.
pub fn set_link_up(name: &str, up: bool) -> Result<()> {
    let fd = dgram_socket()?;
    let flags = get_flags(&fd, name)?;
    let mut r = ifreq(name)?;
    let want = if up {
        flags | libc::IFF_UP as libc::c_short
    } else {
        flags & !(libc::IFF_UP as libc::c_short)
    };
    r.ifr_ifru.ifru_flags = want;
    // SAFETY: SIOCSIFFLAGS reads the name and flags.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut r) } != 0 {
        return Err(Error::last("SIOCSIFFLAGS"));
    }
    Ok(())
}

/// Whether `name` is up with carrier (IFF_RUNNING).
pub fn is_running(name: &str) -> Result<bool> {
    let fd = dgram_socket()?;
    let f = get_flags(&fd, name)?;
    Ok(f & libc::IFF_RUNNING as libc::c_short != 0 && f & libc::IFF_UP as libc::c_short != 0)
}

/// Wait until `name` has carrier, at most `timeout`; returns whether it does. Link state
/// changes are asynchronous (linkwatch), and a segment sent before is dropped (pitfall 8).
pub fn wait_running(name: &str, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if is_running(name)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// The interface's MAC address.
pub fn hwaddr(name: &str) -> Result<Mac> {
    let fd = dgram_socket()?;
    let mut r = ifreq(name)?;
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifru_hwaddr.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut r) } != 0 {
        return Err(Error::last("SIOCGIFHWADDR"));
    }
    // SAFETY: filled by the kernel.
    let sa = unsafe { r.ifr_ifru.ifru_hwaddr };
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(m)
}

fn ifindex(name: &str) -> Result<libc::c_int> {
    let fd = dgram_socket()?;
    let mut r = ifreq(name)?;
    // SAFETY: SIOCGIFINDEX reads the name and writes ifru_ifindex.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut r) } != 0 {
        return Err(Error::last("SIOCGIFINDEX"));
    }
    // SAFETY: filled by the kernel.
    Ok(unsafe { r.ifr_ifru.ifru_ifindex })
}

/// A raw `AF_PACKET` socket ready to broadcast gratuitous ARPs on one interface, so switches
/// and bridges learn the MAC's new port at once instead of flooding or waiting (pitfall 9).
///
/// Open it ahead of time and keep it: closing a packet socket waits for an RCU grace period
/// (`synchronize_net`), measured at 10-30 ms, which must not land inside the freeze. It is
/// opened with protocol 0, so it never receives anything.
#[derive(Debug)]
pub struct GarpSender {
    fd: OwnedFd,
    ifindex: libc::c_int,
    mac: Mac,
}

impl GarpSender {
    /// Look up `name`'s index and MAC and open the socket (in the calling thread's namespace).
    pub fn open(name: &str) -> Result<GarpSender> {
        let mac = hwaddr(name)?;
        let ifindex = ifindex(name)?;
        // SAFETY: plain socket(2), checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(Error::last("socket (AF_PACKET)"));
        }
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(GarpSender { fd, ifindex, mac })
    }

    /// Broadcast one gratuitous ARP request for `ip` from the interface's MAC.
    pub fn send(&self, ip: Ipv4Addr) -> Result<()> {
        let frame = packet::build::gratuitous_arp(packet::EthernetAddress(self.mac), ip);
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].fill(0xff);
        // SAFETY: frame and sll are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(Error::last("sendto (gratuitous ARP)"));
        }
        Ok(())
    }
}

/// The calling thread's IPv4 neighbour table (complete entries only). Read before isolating:
/// losing carrier flushes it (pitfall 4). `/proc/thread-self` because `/proc/self/net` shows
/// the main thread's namespace, not this thread's.
pub fn arp_table() -> Result<HashMap<Ipv4Addr, Mac>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp")?;
    Ok(parse_proc_arp(&text))
}

/// Parse `/proc/net/arp` text; entries whose flags lack ATF_COM (incomplete) are skipped.
pub fn parse_proc_arp(text: &str) -> HashMap<Ipv4Addr, Mac> {
    let mut m = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & libc::ATF_COM as u32 == 0 {
            continue;
        }
        if let (Ok(ip), Some(mac)) = (f[0].parse::<Ipv4Addr>(), parse_mac(f[3])) {
            m.insert(ip, mac);
        }
    }
    m
}

/// Install a (non-permanent, STALE) neighbour entry so the first segment after resuming does
/// not wait for ARP resolution.
pub fn set_neighbour(name: &str, ip: Ipv4Addr, mac: Mac) -> Result<()> {
    let fd = dgram_socket()?;
    // SAFETY: arpreq is plain data.
    let mut r: libc::arpreq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size.
    r.arp_pa = unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) };
    r.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in r.arp_ha.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    r.arp_flags = libc::ATF_COM;
    let dev = ifreq(name)?.ifr_name;
    r.arp_dev = dev;
    // SAFETY: SIOCSARP reads the arpreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSARP as _, &r) } != 0 {
        return Err(Error::last("SIOCSARP"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_arp_parses_complete_entries_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 192.168.12.100   0x1         0x2         02:42:c0:a8:0c:64     *        eth0\n\
                 192.168.12.7     0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 garbage\n";
        let m = parse_proc_arp(t);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[&"192.168.12.100".parse().unwrap()],
            [0x02, 0x42, 0xc0, 0xa8, 0x0c, 0x64]
        );
    }

    #[test]
    fn mac_round_trip_and_bad_input() {
        let m = parse_mac("02:42:c0:a8:0c:02").unwrap();
        assert_eq!(mac_to_string(&m), "02:42:c0:a8:0c:02");
        assert!(parse_mac("02:42:c0:a8:0c").is_none());
        assert!(parse_mac("02:42:c0:a8:0c:02:03").is_none());
        assert!(parse_mac("zz:42:c0:a8:0c:02").is_none());
        assert!(ifreq("a-very-long-interface-name").is_err());
    }
}
