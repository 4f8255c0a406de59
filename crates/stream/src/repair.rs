//! TCP repair (`TCP_REPAIR`) for one established IPv4 socket: read everything the kernel knows
//! about the connection, close it silently, and rebuild it in another network namespace.
//!
//! The order of operations follows `shared/reference/tcp-repair-migration.md`, which measured it:
//! the caller must have isolated the connection (no packet may arrive) *before* [`checkpoint`],
//! because a socket in repair mode still receives and ACKs data (pitfall 1).
//!
//! **Unacked bytes are restored as unsent.** [`restore`] sets the send sequence to `snd_una`
//! (write_seq minus every byte still in the send queue) and [`RepairedSocket::finish`] writes
//! all of them as ordinary data once repair mode is off. A restored socket has no RTT sample,
//! so bytes put back "as already sent" that were lost in flight wait for TLP (1 s) and RTO
//! (3 s); the reference measured a 4 s stall for 96 KB (pitfall 7). Re-sent bytes the peer
//! already holds are dropped by it as duplicates (DSACK), so the stream stays exact. When the
//! source drains (SIOCOUTQ = 0) there is nothing unacked and both choices are equal.

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

// Linux uapi values (include/uapi/linux/tcp.h, sockios.h). libc lacks some of them.
const TCP_REPAIR: libc::c_int = 19;
const TCP_REPAIR_QUEUE: libc::c_int = 20;
const TCP_QUEUE_SEQ: libc::c_int = 21;
const TCP_REPAIR_OPTIONS: libc::c_int = 22;
const TCP_TIMESTAMP: libc::c_int = 24;
const TCP_REPAIR_WINDOW: libc::c_int = 29;
const TCP_NO_QUEUE: libc::c_int = 0;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const TCP_REPAIR_ON: libc::c_int = 1;
const TCP_REPAIR_OFF: libc::c_int = 0;
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const SIOCINQ: libc::c_ulong = 0x541B;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;
const TCP_ESTABLISHED: u8 = 1;

/// `tcpi_options` bit: timestamps negotiated.
pub const TCPI_OPT_TIMESTAMPS: u8 = 1;
/// `tcpi_options` bit: SACK negotiated.
pub const TCPI_OPT_SACK: u8 = 2;
/// `tcpi_options` bit: window scaling negotiated.
pub const TCPI_OPT_WSCALE: u8 = 4;
/// `TCP_MAXSEG` rejects larger values (loopback's clamp of 65483 must be capped).
const MAXSEG_CAP: u32 = 32767;

/// `struct tcp_repair_window`: the window state that `TCP_REPAIR_WINDOW` reads and writes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// Everything needed to rebuild one established connection. Serialisable so it can cross a
/// process boundary (the control protocol sends it as JSON; byte queues are hex strings).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TcpState {
    pub local: SocketAddrV4,
    pub peer: SocketAddrV4,
    /// write_seq: sequence number after the last byte the application wrote.
    pub send_seq: u32,
    /// rcv_nxt: next sequence number expected from the peer.
    pub recv_seq: u32,
    /// Sent but not yet acknowledged (snd_una .. snd_nxt).
    #[serde(with = "crate::hex")]
    pub unacked: Vec<u8>,
    /// Written by the application but never sent (snd_nxt .. write_seq).
    #[serde(with = "crate::hex")]
    pub unsent: Vec<u8>,
    /// Received and acknowledged but not read by the application.
    #[serde(with = "crate::hex")]
    pub recv_queue: Vec<u8>,
    /// mss_clamp as `TCP_MAXSEG` reports it in repair mode.
    pub mss_clamp: u32,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// `tcpi_options`: which of timestamps / SACK / wscale were negotiated.
    pub tcpi_options: u8,
    /// Current tsval (`TCP_TIMESTAMP`); restoring it keeps the peer's PAWS check happy.
    pub timestamp: u32,
    pub window: RepairWindow,
    pub sndbuf: u32,
    pub rcvbuf: u32,
}

impl TcpState {
    /// Sequence number of the first byte still in the send queue (snd_una).
    pub fn snd_una(&self) -> u32 {
        self.send_seq
            .wrapping_sub((self.unacked.len() + self.unsent.len()) as u32)
    }
}

/// A socket rebuilt by [`restore`], still in repair mode: nothing has been sent, so the
/// orchestrator can switch the network path before [`RepairedSocket::finish`].
#[derive(Debug)]
pub struct RepairedSocket {
    fd: OwnedFd,
    /// Unacked + unsent bytes, sent as new data after repair mode is off.
    pending: Vec<u8>,
}

impl RepairedSocket {
    /// Bytes that [`finish`](Self::finish) will write after leaving repair mode.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Leave repair mode (the kernel sends a window probe, which also re-announces the
    /// connection to the peer) and write the bytes that were not acknowledged before the
    /// checkpoint. The returned stream is blocking, as a fresh `TcpStream` would be.
    pub fn finish(self) -> Result<TcpStream> {
        let fd = self.fd.as_raw_fd();
        setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            TCP_REPAIR,
            TCP_REPAIR_OFF,
            "TCP_REPAIR off",
        )?;
        let stream = TcpStream::from(self.fd);
        if !self.pending.is_empty() {
            // restore() sized the send buffer for these bytes, so this does not block; the
            // timeout is a guard against a peer that stopped reading meanwhile.
            stream.set_write_timeout(Some(Duration::from_secs(2)))?;
            std::io::Write::write_all(&mut &stream, &self.pending)?;
            stream.set_write_timeout(None)?;
        }
        Ok(stream)
    }
}

/// Put `sock` into repair mode and read its whole state. The caller must already have
/// isolated the connection and should drop the socket afterwards: closing a socket in repair
/// mode sends neither FIN nor RST. On error the socket may be left in repair mode.
pub fn checkpoint(sock: &TcpStream) -> Result<TcpState> {
    let fd = sock.as_raw_fd();
    let local = v4(sock.local_addr()?)?;
    let peer = v4(sock.peer_addr()?)?;
    let info = tcp_info(fd)?;
    if info.0 != TCP_ESTABLISHED {
        return Err(Error::NotEstablished { state: info.0 });
    }
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR,
        TCP_REPAIR_ON,
        "TCP_REPAIR on",
    )?;

    // Send side.
    set_queue(fd, TCP_SEND_QUEUE)?;
    let send_seq = getsockopt_u32(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ send")?;
    let outq = ioctl_int(fd, SIOCOUTQ, "SIOCOUTQ")?;
    let notsent = ioctl_int(fd, SIOCOUTQNSD, "SIOCOUTQNSD")?;
    let sendq = peek(fd, outq, "send")?;
    if notsent > outq {
        return Err(Error::BadState {
            reason: format!("SIOCOUTQNSD {notsent} > SIOCOUTQ {outq}"),
        });
    }
    let (unacked, unsent) = sendq.split_at(outq - notsent);

    // Receive side.
    set_queue(fd, TCP_RECV_QUEUE)?;
    let recv_seq = getsockopt_u32(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ recv")?;
    let inq = ioctl_int(fd, SIOCINQ, "SIOCINQ")?;
    let recv_queue = peek(fd, inq, "receive")?;
    set_queue(fd, TCP_NO_QUEUE)?;

    let mss_clamp = getsockopt_u32(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, "TCP_MAXSEG")?;
    let timestamp = getsockopt_u32(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP")?;
    let mut w = [0u32; 5];
    getsockopt_raw(
        fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR_WINDOW,
        &mut w,
        "TCP_REPAIR_WINDOW",
    )?;
    let sndbuf = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF")?;
    let rcvbuf = getsockopt_u32(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF")?;
    Ok(TcpState {
        local,
        peer,
        send_seq,
        recv_seq,
        unacked: unacked.to_vec(),
        unsent: unsent.to_vec(),
        recv_queue,
        mss_clamp,
        snd_wscale: info.2 & 0x0f,
        rcv_wscale: info.2 >> 4,
        tcpi_options: info.1,
        timestamp,
        window: RepairWindow {
            snd_wl1: w[0],
            snd_wnd: w[1],
            max_window: w[2],
            rcv_wnd: w[3],
            rcv_wup: w[4],
        },
        sndbuf,
        rcvbuf,
    })
}

/// Rebuild a connection in the calling thread's network namespace. The local address must be
/// configured on an interface that is admin-up (carrier may be off), otherwise the repair
/// `connect()` fails with ENETUNREACH (pitfall 3). Nothing is transmitted until
/// [`RepairedSocket::finish`].
pub fn restore(state: &TcpState) -> Result<RepairedSocket> {
    if state.recv_queue.len() > u32::MAX as usize / 2 {
        return Err(Error::BadState {
            reason: "receive queue too large".into(),
        });
    }
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        )
    };
    if raw < 0 {
        return Err(Error::last("socket"));
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let s = fd.as_raw_fd();
    setsockopt_int(
        s,
        libc::IPPROTO_TCP,
        TCP_REPAIR,
        TCP_REPAIR_ON,
        "TCP_REPAIR on",
    )?;

    // Sequence numbers: only allowed while the socket is CLOSE, i.e. before connect().
    set_queue(s, TCP_SEND_QUEUE)?;
    setsockopt_u32(s, TCP_QUEUE_SEQ, state.snd_una(), "TCP_QUEUE_SEQ send")?;
    set_queue(s, TCP_RECV_QUEUE)?;
    let rcv_start = state.recv_seq.wrapping_sub(state.recv_queue.len() as u32);
    setsockopt_u32(s, TCP_QUEUE_SEQ, rcv_start, "TCP_QUEUE_SEQ recv")?;
    set_queue(s, TCP_NO_QUEUE)?;

    if state.tcpi_options & TCPI_OPT_TIMESTAMPS != 0 {
        setsockopt_u32(s, TCP_TIMESTAMP, state.timestamp, "TCP_TIMESTAMP")?;
    }
    // Before connect(), or the send MSS is computed from the default clamp of 536.
    let maxseg = state.mss_clamp.clamp(88, MAXSEG_CAP);
    setsockopt_u32(s, libc::TCP_MAXSEG, maxseg, "TCP_MAXSEG")?;

    let local = sockaddr_in(state.local);
    let peer = sockaddr_in(state.peer);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: local is a valid sockaddr_in of `len` bytes.
    if unsafe { libc::bind(s, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(Error::last("bind (repair)"));
    }
    // SAFETY: as above; in repair mode connect() only moves the socket to ESTABLISHED.
    if unsafe { libc::connect(s, (&peer as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(Error::last("connect (repair)"));
    }

    // Options: only accepted in ESTABLISHED.
    let mut opts: Vec<[u32; 2]> = vec![[TCPOPT_MSS, state.mss_clamp]];
    if state.tcpi_options & TCPI_OPT_WSCALE != 0 {
        opts.push([
            TCPOPT_WINDOW,
            u32::from(state.snd_wscale) | (u32::from(state.rcv_wscale) << 16),
        ]);
    }
    if state.tcpi_options & TCPI_OPT_SACK != 0 {
        opts.push([TCPOPT_SACK_PERM, 0]);
    }
    if state.tcpi_options & TCPI_OPT_TIMESTAMPS != 0 {
        opts.push([TCPOPT_TIMESTAMP, 0]);
    }
    setsockopt_raw(
        s,
        libc::IPPROTO_TCP,
        TCP_REPAIR_OPTIONS,
        &opts,
        "TCP_REPAIR_OPTIONS",
    )?;

    // Buffers: large enough for what goes back in (forcing turns autotuning off, so only
    // when needed).
    let pending = state.unacked.len() + state.unsent.len();
    ensure_buf(
        s,
        libc::SO_SNDBUF,
        libc::SO_SNDBUFFORCE,
        pending,
        state.sndbuf,
    )?;
    ensure_buf(
        s,
        libc::SO_RCVBUF,
        libc::SO_RCVBUFFORCE,
        state.recv_queue.len(),
        state.rcvbuf,
    )?;

    if !state.recv_queue.is_empty() {
        set_queue(s, TCP_RECV_QUEUE)?;
        let mut rest: &[u8] = &state.recv_queue;
        while !rest.is_empty() {
            // SAFETY: rest is a valid readable buffer of rest.len() bytes.
            let n = unsafe { libc::send(s, rest.as_ptr().cast(), rest.len(), 0) };
            if n <= 0 {
                return Err(Error::last("send (repair receive queue)"));
            }
            rest = &rest[n as usize..];
        }
        set_queue(s, TCP_NO_QUEUE)?;
    }

    // Window last: the kernel checks it against rcv_nxt.
    let w = state.window;
    let words = [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup];
    setsockopt_raw(
        s,
        libc::IPPROTO_TCP,
        TCP_REPAIR_WINDOW,
        &words,
        "TCP_REPAIR_WINDOW",
    )?;

    let mut bytes = Vec::with_capacity(pending);
    bytes.extend_from_slice(&state.unacked);
    bytes.extend_from_slice(&state.unsent);
    Ok(RepairedSocket { fd, pending: bytes })
}

/// Bytes in the send queue not yet acknowledged by the peer (`SIOCOUTQ`); the server polls it
/// to drain before a checkpoint.
pub fn unacked_bytes(sock: &impl AsRawFd) -> Result<usize> {
    ioctl_int(sock.as_raw_fd(), SIOCOUTQ, "SIOCOUTQ")
}

fn v4(a: SocketAddr) -> Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(v) => Ok(v),
        SocketAddr::V6(_) => Err(Error::NotIpv4 { addr: a }),
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn ensure_buf(
    fd: RawFd,
    opt: libc::c_int,
    force: libc::c_int,
    bytes: usize,
    saved: u32,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let cur = getsockopt_u32(fd, libc::SOL_SOCKET, opt, "get buffer size")? as usize;
    // The kernel charges skb overhead against the buffer; twice the payload is ample.
    let want = (bytes * 2 + 65536).max(saved as usize);
    if cur < want {
        // The force variants store the value doubled, as SO_SNDBUF does.
        let v = (want / 2).min(i32::MAX as usize) as libc::c_int;
        setsockopt_int(fd, libc::SOL_SOCKET, force, v, "SO_*BUFFORCE")?;
    }
    Ok(())
}

fn set_queue(fd: RawFd, q: libc::c_int) -> Result<()> {
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR_QUEUE,
        q,
        "TCP_REPAIR_QUEUE",
    )
}

/// `(tcpi_state, tcpi_options, wscale byte)` from `TCP_INFO`.
fn tcp_info(fd: RawFd) -> Result<(u8, u8, u8)> {
    let mut buf = [0u8; 104];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Error::last("TCP_INFO"));
    }
    if len < 8 {
        return Err(Error::BadState {
            reason: format!("TCP_INFO returned {len} bytes"),
        });
    }
    Ok((buf[0], buf[5], buf[6]))
}

fn peek(fd: RawFd, n: usize, queue: &'static str) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    if n == 0 {
        return Ok(v);
    }
    // SAFETY: v is writable for n bytes.
    let got = unsafe {
        libc::recv(
            fd,
            v.as_mut_ptr().cast(),
            n,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if got < 0 {
        return Err(Error::last(if queue == "send" {
            "recv peek send queue"
        } else {
            "recv peek receive queue"
        }));
    }
    if got as usize != n {
        return Err(Error::ShortQueue {
            queue,
            got: got as usize,
            want: n,
        });
    }
    Ok(v)
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong, op: &'static str) -> Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int.
    if unsafe { libc::ioctl(fd, req as _, &mut v) } != 0 {
        return Err(Error::last(op));
    }
    Ok(v.max(0) as usize)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
    op: &'static str,
) -> Result<()> {
    setsockopt_raw(fd, level, opt, std::slice::from_ref(&v), op)
}

fn setsockopt_u32(fd: RawFd, opt: libc::c_int, v: u32, op: &'static str) -> Result<()> {
    setsockopt_raw(fd, libc::IPPROTO_TCP, opt, std::slice::from_ref(&v), op)
}

fn setsockopt_raw<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &[T],
    op: &'static str,
) -> Result<()> {
    let len = std::mem::size_of_val(v) as libc::socklen_t;
    // SAFETY: v is readable for len bytes; T is plain data (u32/i32 arrays).
    if unsafe { libc::setsockopt(fd, level, opt, v.as_ptr().cast(), len) } != 0 {
        return Err(Error::last(op));
    }
    Ok(())
}

fn getsockopt_raw<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &mut [T],
    op: &'static str,
) -> Result<()> {
    let mut len = std::mem::size_of_val(v) as libc::socklen_t;
    // SAFETY: v is writable for len bytes; T is plain data.
    if unsafe { libc::getsockopt(fd, level, opt, v.as_mut_ptr().cast(), &mut len) } != 0 {
        return Err(Error::last(op));
    }
    Ok(())
}

fn getsockopt_u32(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    op: &'static str,
) -> Result<u32> {
    let mut v = [0u32; 1];
    getsockopt_raw(fd, level, opt, &mut v, op)?;
    Ok(v[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TcpState {
        TcpState {
            local: "10.0.0.2:8080".parse().unwrap(),
            peer: "10.0.0.100:40000".parse().unwrap(),
            send_seq: 10,
            recv_seq: 7,
            unacked: vec![1, 2, 3],
            unsent: vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            recv_queue: vec![0xff, 0],
            mss_clamp: 1460,
            snd_wscale: 7,
            rcv_wscale: 10,
            tcpi_options: 7,
            timestamp: 123,
            window: RepairWindow::default(),
            sndbuf: 1,
            rcvbuf: 2,
        }
    }

    #[test]
    fn snd_una_wraps_below_zero() {
        // 15 queued bytes, write_seq 10: snd_una is 2^32 - 5.
        assert_eq!(sample().snd_una(), u32::MAX - 4);
    }

    #[test]
    fn state_round_trips_through_json_with_hex_queues() {
        let s = sample();
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["recv_queue"], "ff00");
        assert_eq!(j["unacked"], "010203");
        let back: TcpState = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }
}
