//! Root-only end-to-end tests: a server netns with a TCP listener on a VIP and the agent on its
//! veth, a peer netns that injects crafted frames with AF_PACKET (and makes real connections)
//! and captures what comes back. Run in generic and in native mode.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use er_agent::{
    AttachMode, AttachOptions, ErAgentArgs, ErAgentCommand, Marker, Stats, StatsArgs, Target,
    TargetArgs, dscp_marked_tos,
};

const SRV_MAC: [u8; 6] = [0x02, 0xea, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0xea, 0, 0, 0, 0x02];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 0);
/// Source of crafted frames: not local anywhere, so nothing in the peer reacts to replies.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 99);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            // SAFETY: valid netns fd; affects only this thread.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Two namespaces joined by a veth pair; removed (with any agent pins) on drop.
struct Bed {
    srv: String,
    peer: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = er_agent::detach(&Target::new(Some(&self.srv), "vs"));
        for ns in [&self.srv, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let pid = std::process::id();
        let bed = Bed {
            srv: format!("era{pid}{tag}s"),
            peer: format!("era{pid}{tag}p"),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (s, p) = (bed.srv.as_str(), bed.peer.as_str());
        for ns in [s, p] {
            sh(&["ip", "netns", "add", ns]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "-n",
            s,
            "link",
            "add",
            "vs",
            "address",
            &mac_str(SRV_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "vp",
            "address",
            &mac_str(PEER_MAC),
            "netns",
            p,
        ]);
        sh(&["ip", "-n", s, "addr", "add", "10.77.0.1/24", "dev", "vs"]);
        sh(&["ip", "-n", s, "addr", "add", "10.0.10.0/32", "dev", "lo"]);
        sh(&["ip", "-n", s, "link", "set", "vs", "up"]);
        for ip in ["10.77.0.2", "10.77.0.99"] {
            sh(&[
                "ip",
                "-n",
                s,
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac_str(PEER_MAC),
                "dev",
                "vs",
                "nud",
                "permanent",
            ]);
        }
        sh(&["ip", "-n", p, "addr", "add", "10.77.0.2/24", "dev", "vp"]);
        sh(&["ip", "-n", p, "link", "set", "vp", "up"]);
        sh(&[
            "ip",
            "-n",
            p,
            "neigh",
            "replace",
            "10.77.0.1",
            "lladdr",
            &mac_str(SRV_MAC),
            "dev",
            "vp",
            "nud",
            "permanent",
        ]);
        sh(&[
            "ip",
            "-n",
            p,
            "route",
            "add",
            "10.0.10.0/32",
            "via",
            "10.77.0.1",
        ]);
        bed
    }

    fn target(&self) -> Target {
        Target::new(Some(&self.srv), "vs")
    }

    /// Echo server on VIP:80 in srv, stopped when the bed drops.
    fn listen(&self) {
        let listener: TcpListener = in_netns(&self.srv, || {
            TcpListener::bind(SocketAddr::from((VIP, 80))).expect("bind VIP:80")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        std::thread::spawn(move || {
                            let _ = c.set_nonblocking(false);
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = c.read(&mut buf) {
                                if n == 0 || c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    fn xdp_shown(&self) -> bool {
        sh(&["ip", "-n", &self.srv, "link", "show", "dev", "vs"]).contains("xdp")
    }
}

/// An AF_PACKET socket on the peer's veth.
struct Tap {
    fd: OwnedFd,
}

impl Tap {
    fn open(ns: &str, iface: &str) -> Tap {
        let iface = iface.to_string();
        in_netns(ns, move || {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
            // SAFETY: raw is a fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let name = std::ffi::CString::new(iface).unwrap();
            // SAFETY: NUL-terminated name.
            let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(idx > 0);
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = idx as i32;
            // SAFETY: valid fd and sockaddr of the right size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: valid fd, option value of the right type.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            Tap { fd }
        })
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The first incoming TCP frame matching `want` within `wait`.
    fn recv_match(&self, wait: Duration, want: impl Fn(&Rx) -> bool) -> Option<Rx> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 9000];
        while Instant::now() < deadline {
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: valid fd, buffer and address out-params.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n <= 0 || sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if let Some(rx) = Rx::parse(&buf[..n as usize])
                && want(&rx)
            {
                return Some(rx);
            }
        }
        None
    }
}

#[derive(Debug, Clone)]
struct Seg {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    tos: u8,
    ip_options: Vec<u8>,
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

fn csum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Seg {
    fn ack(sport: u16, dport: u16, tos: u8) -> Seg {
        Seg {
            src: CLIENT_IP,
            dst: VIP,
            sport,
            dport,
            flags: ACK | PSH,
            tos,
            ip_options: Vec::new(),
        }
    }

    fn frame(&self) -> Vec<u8> {
        let payload = b"GET / HTTP/1.0\r\n\r\n";
        let ihl = 20 + self.ip_options.len();
        assert_eq!(ihl % 4, 0);
        let total = ihl + 20 + payload.len();
        let mut f = Vec::with_capacity(14 + total);
        f.extend_from_slice(&SRV_MAC);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let ip_start = f.len();
        f.push(0x40 | (ihl / 4) as u8);
        f.push(self.tos);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&self.ip_options);
        let c = csum(&f[ip_start..ip_start + ihl], 0);
        f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
        let tcp_start = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&0x1000_0000u32.to_be_bytes());
        let ack = if self.flags & ACK != 0 {
            0x2000_0000u32
        } else {
            0
        };
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, self.flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        let tcp_len = f.len() - tcp_start;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[tcp_start..]);
        let c = csum(&pseudo, 0);
        f[tcp_start + 16..tcp_start + 18].copy_from_slice(&c.to_be_bytes());
        f
    }
}

#[derive(Debug, Clone)]
struct Rx {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tos: u8,
    ttl: u8,
    ip_csum_ok: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    /// Everything after the IPv4 header.
    l4: Vec<u8>,
}

impl Rx {
    fn parse(b: &[u8]) -> Option<Rx> {
        if b.len() < 34 || b[12..14] != [0x08, 0x00] || b[14] >> 4 != 4 || b[23] != 6 {
            return None;
        }
        let ihl = usize::from(b[14] & 0xf) * 4;
        let ip = b.get(14..14 + ihl)?;
        let tcp = b.get(14 + ihl..14 + ihl + 20)?;
        Some(Rx {
            dst_mac: b[0..6].try_into().ok()?,
            src_mac: b[6..12].try_into().ok()?,
            tos: ip[1],
            ttl: ip[8],
            ip_csum_ok: csum(ip, 0) == 0,
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            flags: tcp[13],
            l4: b[14 + ihl..].to_vec(),
        })
    }
}

const WAIT: Duration = Duration::from_secs(2);

fn bounced(tap: &Tap, seg: &Seg) -> Option<Rx> {
    tap.recv_match(WAIT, |r| {
        r.src == seg.src && r.dst == seg.dst && r.sport == seg.sport && r.dport == seg.dport
    })
}

fn reply(tap: &Tap, seg: &Seg, flags: u8) -> Option<Rx> {
    tap.recv_match(WAIT, |r| {
        r.src == seg.dst && r.dport == seg.sport && r.sport == seg.dport && r.flags & flags == flags
    })
}

/// A bounced frame is the sent one with MACs swapped and only ToS + IP checksum changed.
fn assert_bounce(rx: &Rx, seg: &Seg, want_tos: u8) {
    let sent = Rx::parse(&seg.frame()).expect("parse own frame");
    assert_eq!(rx.dst_mac, PEER_MAC, "destination MAC is the sender's");
    assert_eq!(rx.src_mac, SRV_MAC, "source MAC is the server's");
    assert_eq!(rx.tos, want_tos, "tos {:#x} want {want_tos:#x}", rx.tos);
    assert!(rx.ip_csum_ok, "IPv4 checksum must stay valid");
    assert_eq!(rx.ttl, 64, "TTL untouched");
    assert_eq!(rx.l4, sent.l4, "TCP header and payload untouched");
}

fn read_stats(bed: &Bed) -> Stats {
    er_agent::stats(&bed.target()).expect("stats")
}

fn attach(bed: &Bed, mode: AttachMode, marker: Marker) {
    let opts = AttachOptions {
        mode,
        marker,
        max_generation: 2,
        vips: vec![VIP],
    };
    er_agent::attach(&bed.target(), &opts).expect("attach");
}

fn echo_once(bed: &Bed, msg: &[u8]) -> Vec<u8> {
    let mut c: TcpStream = in_netns(&bed.peer, || {
        TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), WAIT).expect("connect VIP:80")
    });
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        c.write_all(msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        c.read_exact(&mut buf).expect("echo");
        got.extend_from_slice(&buf);
    }
    got
}

fn scenario(tag: &str, mode: AttachMode) {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let bed = Bed::new(tag);
    bed.listen();
    let _peer_pass = (mode == AttachMode::Native).then(|| {
        er_agent::hold_pass_program(&Target::new(Some(&bed.peer), "vp"), AttachMode::Native)
            .expect("native XDP_PASS on the peer")
    });
    let tap = Tap::open(&bed.peer, "vp");
    attach(&bed, mode, Marker::Dscp);
    assert!(bed.xdp_shown(), "ip link shows the program");
    assert!(matches!(
        er_agent::attach(&bed.target(), &AttachOptions::default()),
        Err(er_agent::Error::AlreadyAttached { .. })
    ));
    let s0 = read_stats(&bed);
    assert_eq!(s0.mode, Some(mode));
    assert_eq!(s0.max_generation, 2);

    // (a) unknown non-SYN at the listener's port and at a closed port: bounced, gen 1, ECN kept.
    let a1 = Seg::ack(40001, 80, 0x02);
    tap.send(&a1.frame());
    let rx = bounced(&tap, &a1).expect("(a) bounce at listener port");
    assert_bounce(&rx, &a1, dscp_marked_tos(1, 0b10));
    let a2 = Seg::ack(40002, 81, 0x01);
    tap.send(&a2.frame());
    let rx = bounced(&tap, &a2).expect("(a) bounce at closed port");
    assert_bounce(&rx, &a2, dscp_marked_tos(1, 0b01));
    // Honour IHL: IP options move the TCP header; ports must still be right.
    let mut a3 = Seg::ack(40003, 81, 0);
    a3.ip_options = vec![1, 1, 1, 1];
    tap.send(&a3.frame());
    let rx = bounced(&tap, &a3).expect("(a) bounce with IP options");
    assert_bounce(&rx, &a3, dscp_marked_tos(1, 0));
    let s1 = read_stats(&bed);
    assert_eq!(s1.bounced - s0.bounced, 3);
    assert_eq!(s1.bounced_by_generation[1] - s0.bounced_by_generation[1], 3);
    assert_eq!(s1.listener_no_cookie - s0.listener_no_cookie, 1);
    assert_eq!(s1.no_socket - s0.no_socket, 2);

    // (b) marked 1 -> 2; marked 2 (= max_generation) is passed and the stack answers RST.
    let b1 = Seg::ack(40011, 80, dscp_marked_tos(1, 0b10));
    tap.send(&b1.frame());
    let rx = bounced(&tap, &b1).expect("(b) marked 1 bounced");
    assert_bounce(&rx, &b1, dscp_marked_tos(2, 0b10));
    let b2 = Seg::ack(40012, 80, dscp_marked_tos(2, 0));
    tap.send(&b2.frame());
    let rst = reply(&tap, &b2, RST).expect("(b) RST for a packet at max_generation");
    assert_eq!(rst.src_mac, SRV_MAC);
    assert!(
        bounced(&tap, &b2).is_none(),
        "(b) not bounced at max_generation"
    );
    let s2 = read_stats(&bed);
    assert_eq!(s2.bounced - s1.bounced, 1);
    assert_eq!(s2.bounced_by_generation[2] - s1.bounced_by_generation[2], 1);
    assert_eq!(s2.gave_up - s1.gave_up, 1);

    // (c) SYN to the listener: SYN-ACK, never a bounce; also with IP options (IHL 6).
    let mut c1 = Seg::ack(40021, 80, 0);
    c1.flags = SYN;
    tap.send(&c1.frame());
    let sa = reply(&tap, &c1, SYN | ACK).expect("(c) SYN-ACK");
    assert_eq!(sa.src_mac, SRV_MAC);
    let mut c2 = c1.clone();
    c2.sport = 40022;
    c2.ip_options = vec![1, 1, 1, 1];
    tap.send(&c2.frame());
    reply(&tap, &c2, SYN | ACK).expect("(c) SYN-ACK with IP options");
    // A SYN with no listener: not bounced either (RST from the stack).
    let mut c3 = c1.clone();
    c3.sport = 40023;
    c3.dport = 81;
    tap.send(&c3.frame());
    reply(&tap, &c3, RST).expect("(c) RST for SYN to closed port");
    let s3 = read_stats(&bed);
    assert_eq!(s3.pass_syn - s2.pass_syn, 3);
    assert_eq!(s3.bounced, s2.bounced);

    // Malformed: TCP header cut short -> dropped and counted.
    let mut short = Seg::ack(40031, 81, 0).frame();
    short.truncate(14 + 20 + 10);
    short[16..18].copy_from_slice(&30u16.to_be_bytes());
    tap.send(&short);
    std::thread::sleep(Duration::from_millis(200));
    let s4 = read_stats(&bed);
    assert_eq!(s4.dropped_malformed - s3.dropped_malformed, 1);

    // (d) real connections pass, including one completed with a SYN cookie.
    assert_eq!(
        echo_once(&bed, b"hello er-agent"),
        b"hello er-agent".repeat(5)
    );
    sh(&[
        "ip",
        "netns",
        "exec",
        &bed.srv,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_syncookies=2",
    ]);
    assert_eq!(echo_once(&bed, b"cookie"), b"cookie".repeat(5));
    sh(&[
        "ip",
        "netns",
        "exec",
        &bed.srv,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_syncookies=1",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let s5 = read_stats(&bed);
    assert_eq!(s5.bounced, s4.bounced, "(d) no bounce for real connections");
    assert_eq!(s5.gave_up, s4.gave_up);
    assert_eq!(s5.pass_syn - s4.pass_syn, 2);
    assert!(s5.pass_socket - s4.pass_socket >= 10, "{s5:?}");
    assert!(
        s5.pass_cookie - s4.pass_cookie >= 1,
        "(d) cookie ACK passed: {s5:?}"
    );

    // (f) the counters add up, and the CLI path prints them.
    assert_eq!(s5.rx_packets, s5.passed + s5.bounced + s5.dropped_malformed);
    assert!(s5.rx_bytes > s5.bounced_bytes && s5.bounced_bytes > 0);
    assert_eq!(
        s5.driver_xdp_tx_errors.unwrap_or(0),
        0,
        "no bounce lost in the driver"
    );
    er_agent::run(ErAgentArgs {
        command: ErAgentCommand::Stats(StatsArgs {
            target: TargetArgs {
                iface: "vs".into(),
                netns: Some(bed.srv.clone()),
            },
            json: true,
        }),
    })
    .expect("stats --json");

    // (e) compat marker: 0x01 set, already-0x01 passed (RST).
    er_agent::detach(&bed.target()).expect("detach");
    attach(&bed, mode, Marker::Compat);
    let e1 = Seg::ack(40041, 80, 0x02);
    tap.send(&e1.frame());
    let rx = bounced(&tap, &e1).expect("(e) compat bounce");
    assert_bounce(&rx, &e1, 0x01);
    let e2 = Seg::ack(40042, 80, 0x01);
    tap.send(&e2.frame());
    reply(&tap, &e2, RST).expect("(e) RST for already-marked");
    let se = read_stats(&bed);
    assert_eq!(se.marker, Some(Marker::Compat));
    assert_eq!((se.bounced, se.gave_up), (1, 1));

    // Detach: program gone, pins gone, unknown ACK now draws the stack's RST.
    er_agent::detach(&bed.target()).expect("detach");
    assert!(!bed.xdp_shown(), "program removed from the interface");
    assert!(!bed.target().pin_dir().unwrap().exists());
    assert!(matches!(
        er_agent::stats(&bed.target()),
        Err(er_agent::Error::NotAttached { .. })
    ));
    let f1 = Seg::ack(40051, 80, 0);
    tap.send(&f1.frame());
    reply(&tap, &f1, RST).expect("RST after detach");
}

#[test]
fn generic_mode_end_to_end() {
    scenario("g", AttachMode::Generic);
}

#[test]
fn native_mode_end_to_end() {
    scenario("n", AttachMode::Native);
}

#[test]
fn detach_without_attach_is_an_error() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let t = Target::new(Some("era-never-attached"), "vs");
    assert!(matches!(
        er_agent::detach(&t),
        Err(er_agent::Error::NotAttached { .. })
    ));
}
