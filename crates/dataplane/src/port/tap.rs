//! TAP ports: a kernel network interface whose wire is this process.
//!
//! Used for the CPU/passthru port (the kernel stack or a controller on the host
//! sees the switch's punted frames) and for hosts in labs. Frames are read and
//! written one per syscall; a TAP is a control-path port, not a fast path.
//!
//! [`TapPort::create`] makes a new non-persistent device that the kernel removes
//! when the port (its only file descriptor) is dropped. [`TapPort::attach`]
//! opens an existing persistent device (`ip tuntap add mode tap`) and leaves it
//! in place on drop.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use packet::{PacketBuf, Pool};

use super::{Port, PortError, PortStats, TxOutcome};

const BACKEND: &str = "tap";

/// A TAP interface opened through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`), non-blocking.
pub struct TapPort {
    id: u16,
    name: String,
    fd: OwnedFd,
    rx_errors: u64,
    tx_errors: u64,
}

impl TapPort {
    /// Create a new TAP device `name` in the calling thread's network namespace
    /// and bring it up. Fails if an interface of that name already exists.
    /// The device disappears when the port is dropped.
    pub fn create(id: u16, name: &str) -> Result<TapPort, PortError> {
        // IFF_TUN_EXCL: fail with EBUSY rather than silently attach to an existing device.
        TapPort::open(id, name, libc::IFF_TUN_EXCL)
    }

    /// Attach to an existing (persistent) TAP device `name` and bring it up.
    /// The device is left in place when the port is dropped.
    pub fn attach(id: u16, name: &str) -> Result<TapPort, PortError> {
        let cname = check_name(id, name)?;
        // TUNSETIFF on a missing name would create a fresh, non-persistent device.
        // SAFETY: cname is a valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(PortError::Config {
                port: id,
                message: format!("tap '{name}' does not exist (attach needs a persistent tap)"),
            });
        }
        TapPort::open(id, name, 0)
    }

    fn open(id: u16, name: &str, extra_flags: libc::c_int) -> Result<TapPort, PortError> {
        let cname = check_name(id, name)?;
        let err = |op: &'static str| PortError::Io {
            port: id,
            backend: BACKEND,
            target: name.to_string(),
            op,
            source: std::io::Error::last_os_error(),
        };
        // SAFETY: path is a valid C string; flags are plain constants.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(err("open /dev/net/tun"));
        }
        // SAFETY: raw is a freshly opened fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ifr = ifreq_for(&cname);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | extra_flags) as libc::c_short;
        // SAFETY: TUNSETIFF takes a pointer to an ifreq, which lives across the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            return Err(err("TUNSETIFF"));
        }
        set_up(&cname).map_err(|source| PortError::Io {
            port: id,
            backend: BACKEND,
            target: name.to_string(),
            op: "set link up",
            source,
        })?;
        tracing::debug!(port = id, tap = name, "tap port open");
        Ok(TapPort {
            id,
            name: name.to_string(),
            fd,
            rx_errors: 0,
            tx_errors: 0,
        })
    }
}

/// Interface names are at most 15 bytes, without '/', whitespace or NUL.
fn check_name(id: u16, name: &str) -> Result<CString, PortError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    match (ok, CString::new(name)) {
        (true, Ok(c)) => Ok(c),
        _ => Err(PortError::Config {
            port: id,
            message: format!(
                "'{name}' is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
            ),
        }),
    }
}

fn ifreq_for(name: &CString) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    ifr
}

/// `ip link set <name> up` through SIOCGIFFLAGS/SIOCSIFFLAGS.
fn set_up(name: &CString) -> std::io::Result<()> {
    // SAFETY: plain socket creation.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = ifreq_for(name);
    // SAFETY: the ioctls read/write the ifreq, which outlives the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Port for TapPort {
    fn id(&self) -> u16 {
        self.id
    }
    fn backend(&self) -> &'static str {
        BACKEND
    }
    fn target(&self) -> &str {
        &self.name
    }

    /// Reads frames until the device has none (EAGAIN) or `max` are taken.
    /// A frame longer than the buffer is detected (it spills into a scratch
    /// area), counted in `rx_errors` and skipped.
    fn rx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
        max: usize,
    ) -> Result<usize, PortError> {
        let mut n = 0;
        let mut spill = [0u8; 64];
        let mut b = pool.get();
        while n < max {
            let space = b.rx_space();
            let cap = space.len();
            let iov = [
                libc::iovec {
                    iov_base: space.as_mut_ptr().cast(),
                    iov_len: cap,
                },
                libc::iovec {
                    iov_base: spill.as_mut_ptr().cast(),
                    iov_len: spill.len(),
                },
            ];
            // SAFETY: both iovecs point into live, writable buffers of the given lengths.
            let r = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => {
                        pool.put(b);
                        return Err(PortError::Io {
                            port: self.id,
                            backend: BACKEND,
                            target: self.name.clone(),
                            op: "read",
                            source: e,
                        });
                    }
                }
            }
            let len = r as usize;
            if len > cap {
                self.rx_errors += 1;
                continue;
            }
            b.set_len(len);
            b.in_port = self.id;
            batch.push(b);
            n += 1;
            b = pool.get();
        }
        pool.put(b);
        Ok(n)
    }

    /// Writes each frame with one `write`. A frame the device refuses
    /// (EAGAIN, link down, too short) is dropped and counted, never waited for.
    fn tx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
    ) -> Result<TxOutcome, PortError> {
        let mut out = TxOutcome::default();
        for b in batch.drain(..) {
            let f = b.frame();
            loop {
                // SAFETY: f is a live slice of f.len() bytes.
                let r = unsafe { libc::write(self.fd.as_raw_fd(), f.as_ptr().cast(), f.len()) };
                if r >= 0 {
                    out.sent += 1;
                    out.bytes += f.len();
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    tracing::debug!(port = self.id, tap = %self.name, error = %e, "tap write failed");
                }
                out.dropped += 1;
                self.tx_errors += 1;
                break;
            }
            pool.put(b);
        }
        Ok(out)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn stats(&self) -> PortStats {
        PortStats {
            rx_errors: self.rx_errors,
            tx_errors: self.tx_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testns::NetNs;
    use super::*;
    use std::time::{Duration, Instant};

    const TAP_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 0x01];

    fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&sender_ip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target_ip);
        f.resize(60, 0);
        f
    }

    /// Receive until `want` matches a frame or two seconds pass.
    fn rx_until(
        port: &mut TapPort,
        pool: &mut Pool,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut batch = Vec::new();
            port.rx_batch(pool, &mut batch, 32).unwrap();
            let hit = batch
                .iter()
                .find(|b| want(b.frame()))
                .map(|b| b.frame().to_vec());
            for b in batch.iter() {
                assert_eq!(b.in_port, port.id());
            }
            pool.put_all(&mut batch);
            if hit.is_some() {
                return hit;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            TapPort::create(1, "a/b"),
            Err(PortError::Config { .. })
        ));
        assert!(matches!(
            TapPort::create(1, "sixteen-chars-xx"),
            Err(PortError::Config { .. })
        ));
        assert!(matches!(
            TapPort::create(1, ""),
            Err(PortError::Config { .. })
        ));
    }

    #[test]
    fn kernel_answers_arp_sent_through_a_created_tap_and_tap_vanishes_on_drop() {
        let Some(ns) = NetNs::new("tap") else { return };
        let reply = ns.run_inside(|| {
            let mut port = TapPort::create(64, "sbtap0").unwrap();
            assert!(port.poll_fd().is_some());
            // A second create with the same name must fail, not attach.
            assert!(TapPort::create(65, "sbtap0").is_err());
            let ns_ip = |args: &[&str]| {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            ns_ip(&["addr", "add", "10.77.0.1/24", "dev", "sbtap0"]);
            let out = String::from_utf8(
                std::process::Command::new("ip")
                    .args(["link", "show", "sbtap0"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap();
            assert!(out.contains(",UP"), "tap not up: {out}");
            let mut pool = Pool::new(64);
            let mut batch = vec![
                PacketBuf::from_slice(&arp_request(TAP_MAC, [10, 77, 0, 2], [10, 77, 0, 1]))
                    .unwrap(),
            ];
            let o = port.tx_batch(&mut pool, &mut batch).unwrap();
            assert_eq!((o.sent, o.dropped), (1, 0));
            let reply = rx_until(&mut port, &mut pool, |f| {
                f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
            });
            drop(port);
            reply
        });
        let reply = reply.expect("no ARP reply from the kernel");
        assert_eq!(&reply[0..6], &TAP_MAC, "reply not addressed to us");
        assert_eq!(&reply[28..32], &[10, 77, 0, 1], "sender IP");
        assert_eq!(&reply[32..38], &TAP_MAC, "target MAC");
        assert_eq!(&reply[38..42], &[10, 77, 0, 2], "target IP");
        let links = ns.ip(&["-o", "link", "show"]);
        assert!(
            !links.contains("sbtap0"),
            "created tap survived drop: {links}"
        );
    }

    #[test]
    fn attach_leaves_a_persistent_tap_in_place() {
        let Some(ns) = NetNs::new("tapp") else { return };
        ns.ip(&["tuntap", "add", "dev", "sbpers0", "mode", "tap"]);
        ns.run_inside(|| {
            assert!(TapPort::attach(1, "sbnone0").is_err());
            let port = TapPort::attach(3, "sbpers0").unwrap();
            assert_eq!(port.target(), "sbpers0");
            drop(port);
        });
        let links = ns.ip(&["-o", "link", "show"]);
        assert!(links.contains("sbpers0"), "persistent tap removed: {links}");
    }
}
