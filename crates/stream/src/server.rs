//! The migration-aware stream server.
//!
//! One thread runs a `ppoll(2)` event loop over nonblocking sockets: the client listener, the
//! clients, the control listener and its connections. Each client gets `fps` frames a second
//! on a fixed grid (multiples of the interval on CLOCK_MONOTONIC, shared by all connections so
//! one wakeup serves them all; no drift), and an echo for every ping. A late loop sends at most [`MAX_BURST`] frames at once and then skips
//! the missed slots, keeping the grid. Each connection keeps its unwritten output, so a
//! partial write never loses bytes, and that output moves with the connection on migration.
//!
//! # Control protocol (`--control PATH`, one JSON object per line each way)
//! - `{"op":"checkpoint","drain_timeout_ms":2000}` (active server): stop frames and echoes,
//!   flush output, wait until every send queue is acknowledged (SIOCOUTQ = 0) or the timeout,
//!   read the peers' MACs, take `--iface` admin-down, repair-checkpoint and silently close every
//!   connection, reply `{"ok":true,"state":{..},"connections":N,"failed":F,"errors":[..],
//!   "drained":B,"unacked_bytes":U,"timings":{"pause_drain_ms","isolate_ms","checkpoint_ms"}}`
//!   and return from [`run`] (the process exits 0). The interface stays down. A failed
//!   isolation is refused and the server keeps serving. Unacked bytes (no or partial drain)
//!   travel in the state and are re-sent by the destination, so `drain_timeout_ms: 0` is safe
//!   and avoids waiting for the clients' delayed ACKs.
//! - `{"op":"restore","state":{..}}` (standby): install neighbour entries, rebuild every socket
//!   in repair mode; reply `{"ok":true,"connections":N,"failed":F,"timings":{"restore_ms":..}}`.
//! - `{"op":"resume"}` (standby after restore): wait for carrier (up to 1 s), send a gratuitous ARP,
//!   leave repair mode on every socket, resume the streams, listen for new clients; reply
//!   `{"ok":true,"connections":N,"timings":{"resume_ms":..,"carrier_wait_ms":..}}`.
//! - `{"op":"status"}`: `{"ok":true,"role":"active"|"standby","connections":N,"generation":G,
//!   "frames_sent":K,"quiesced":Q}`.
//! - `{"op":"shutdown"}` (extension): reply `{"ok":true}` and return from [`run`].
//!
//! Errors are `{"ok":false,"error":"..."}`; a bad request never stops the server.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::netif;
use crate::protocol::{DEFAULT_FRAME_LEN, HEADER_LEN, Header, Kind, MAX_MESSAGE_LEN, monotonic_ns};
use crate::repair::{self, RepairedSocket, TcpState};

/// At most this many frames go out at once when the loop is late (one on time, two caught up).
pub const MAX_BURST: u32 = 3;
/// Stop generating frames for a client whose unwritten output exceeds this (a stalled reader
/// must not grow memory without bound); sequence numbers stay contiguous.
const MAX_PENDING_OUT: usize = 1 << 20;
/// Largest control line accepted (a checkpoint state with full queues is a few MB of hex).
const MAX_CONTROL_LINE: usize = 256 << 20;
/// Longest wait for the destination's link to run before resuming anyway.
const CARRIER_WAIT: Duration = Duration::from_secs(1);
/// Version of the saved-state JSON.
const STATE_VERSION: u32 = 1;

/// Command-line arguments of the stream server (upstream's Go flags, long form).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Client listen address: ":8080" (all addresses) or host:port.
    #[arg(long, default_value = ":8080")]
    pub signaling_addr: String,
    /// HTTP address for /metrics and /health.
    #[arg(long, default_value = ":8081")]
    pub metrics_addr: String,
    /// Frames per second per client.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Bytes per frame, header included.
    #[arg(long, default_value_t = DEFAULT_FRAME_LEN)]
    pub frame_size: usize,
    /// Unix stream socket for the migration control protocol.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Start without clients and wait for a `restore` on the control socket.
    #[arg(long)]
    pub standby: bool,
    /// Interface taken down on checkpoint and used for the gratuitous ARP on resume.
    #[arg(long, default_value = "eth0")]
    pub iface: String,
}

impl Default for ServerArgs {
    fn default() -> Self {
        ServerArgs {
            signaling_addr: ":8080".into(),
            metrics_addr: ":8081".into(),
            fps: 30,
            frame_size: DEFAULT_FRAME_LEN,
            control: None,
            standby: false,
            iface: "eth0".into(),
        }
    }
}

/// Parse Go-style ":8080" (all IPv4 addresses) or any `host:port`.
pub fn parse_listen_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.to_socket_addrs()
        .with_context(|| format!("bad address {s:?}"))?
        .next()
        .with_context(|| format!("address {s:?} resolves to nothing"))
}

static QUIESCE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr2(_: libc::c_int) {
    QUIESCE.fetch_xor(true, Relaxed);
}

fn install_sigusr2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler only touches an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                libc::SIGUSR2,
                on_sigusr2 as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    });
}

/// Run the server until a checkpoint hands its connections away or a `shutdown` request.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let mut s = Server::new(args)?;
    let r = s.event_loop();
    s.stop.store(true, Relaxed);
    if let Some(p) = &s.args.control {
        let _ = std::fs::remove_file(p);
    }
    if let Some(t) = s.metrics_thread.take() {
        let _ = t.join();
    }
    r
}

/// Application state of one connection that moves with it.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct AppConn {
    next_seq: u64,
    next_due_ns: u64,
    #[serde(with = "crate::hex")]
    partial_in: Vec<u8>,
    #[serde(with = "crate::hex")]
    pending_out: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug)]
struct SavedConn {
    tcp: TcpState,
    app: AppConn,
    peer_mac: Option<String>,
}

/// The opaque `state` of the control protocol.
#[derive(Serialize, Deserialize, Debug)]
struct SavedServer {
    version: u32,
    generation: u32,
    total_clients: u64,
    bytes_sent: u64,
    bytes_received: u64,
    frames_sent: u64,
    migrations_restored: u64,
    conns: Vec<SavedConn>,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    next_seq: u64,
    next_due: u64,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    closed: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Write as much pending output as the socket takes.
    fn flush(&mut self, m: &Metrics) {
        while self.out_pos < self.out.len() {
            match (&self.stream).write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.out_pos += n;
                    m.bytes_sent.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!(peer = %self.peer, error = %e, "client write failed, closing");
                    self.closed = true;
                    break;
                }
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 64 * 1024 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    fn push(&mut self, h: &Header) {
        let start = self.out.len();
        self.out.resize(start + h.len as usize, 0);
        h.encode(&mut self.out[start..]);
    }
}

struct CtlConn {
    stream: UnixStream,
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Active,
    Standby,
}

struct Restored {
    sock: RepairedSocket,
    app: AppConn,
    local: Ipv4Addr,
    peer: SocketAddr,
}

struct Server {
    args: ServerArgs,
    interval_ns: u64,
    frame_len: u32,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    metrics_thread: Option<std::thread::JoinHandle<()>>,
    listen_addr: SocketAddr,
    listener: Option<TcpListener>,
    control: Option<UnixListener>,
    ctl: Vec<CtlConn>,
    conns: Vec<Conn>,
    role: Role,
    restored: Option<Vec<Restored>>,
    generation: u32,
    /// Opened at restore and kept for the process lifetime (closing one costs an RCU grace
    /// period, tens of ms).
    garp: Option<netif::GarpSender>,
    exit: bool,
}

impl Server {
    fn new(args: ServerArgs) -> anyhow::Result<Server> {
        anyhow::ensure!(
            (1..=1_000_000).contains(&args.fps),
            "--fps must be 1..=1000000"
        );
        anyhow::ensure!(
            (HEADER_LEN..=MAX_MESSAGE_LEN).contains(&args.frame_size),
            "--frame-size must be {HEADER_LEN}..={MAX_MESSAGE_LEN}"
        );
        if args.standby {
            anyhow::ensure!(args.control.is_some(), "--standby needs --control");
        }
        install_sigusr2();
        let listen_addr = parse_listen_addr(&args.signaling_addr)?;
        let metrics = Arc::new(Metrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let maddr = parse_listen_addr(&args.metrics_addr)?;
        let ml = TcpListener::bind(maddr).with_context(|| format!("metrics bind {maddr}"))?;
        let metrics_thread = {
            let (m, st) = (metrics.clone(), stop.clone());
            std::thread::Builder::new()
                .name("stream-metrics".into())
                .spawn(move || crate::metrics::serve(ml, m, st))?
        };
        let control = match &args.control {
            Some(p) => {
                let _ = std::fs::remove_file(p);
                let l = UnixListener::bind(p)
                    .with_context(|| format!("control socket {}", p.display()))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let mut s = Server {
            interval_ns: 1_000_000_000 / u64::from(args.fps),
            frame_len: args.frame_size as u32,
            role: if args.standby {
                Role::Standby
            } else {
                Role::Active
            },
            args,
            metrics,
            stop,
            metrics_thread: Some(metrics_thread),
            listen_addr,
            listener: None,
            control,
            ctl: Vec::new(),
            conns: Vec::new(),
            restored: None,
            generation: 0,
            garp: None,
            exit: false,
        };
        if s.role == Role::Active {
            s.listen()?;
        }
        tracing::info!(role = ?s.role, addr = %s.listen_addr, fps = s.args.fps, "stream server up");
        Ok(s)
    }

    fn listen(&mut self) -> anyhow::Result<()> {
        let l = TcpListener::bind(self.listen_addr)
            .with_context(|| format!("listen {}", self.listen_addr))?;
        l.set_nonblocking(true)?;
        self.listener = Some(l);
        Ok(())
    }

    fn event_loop(&mut self) -> anyhow::Result<()> {
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        while !self.exit {
            let quiesced = QUIESCE.load(Relaxed);
            let now = monotonic_ns();
            if !quiesced {
                self.generate_frames(now);
            }
            for c in &mut self.conns {
                if c.pending() > 0 {
                    c.flush(&self.metrics);
                }
            }
            self.reap();

            // Poll set: [listener] [control listener] ctl... conns...
            pfds.clear();
            let pfd = |fd, events| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            pfds.push(pfd(
                self.listener.as_ref().map_or(-1, |l| l.as_raw_fd()),
                libc::POLLIN,
            ));
            pfds.push(pfd(
                self.control.as_ref().map_or(-1, |l| l.as_raw_fd()),
                libc::POLLIN,
            ));
            for c in &self.ctl {
                pfds.push(pfd(c.stream.as_raw_fd(), libc::POLLIN));
            }
            for c in &self.conns {
                let ev = libc::POLLIN | if c.pending() > 0 { libc::POLLOUT } else { 0 };
                pfds.push(pfd(c.stream.as_raw_fd(), ev));
            }
            let mut wait = 100_000_000u64;
            if !quiesced {
                let now = monotonic_ns();
                for c in &self.conns {
                    if c.pending() < MAX_PENDING_OUT {
                        wait = wait.min(c.next_due.saturating_sub(now));
                    }
                }
            }
            let ts = libc::timespec {
                tv_sec: (wait / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: pfds is a valid array of pollfd; ts a valid timespec.
            let n = unsafe {
                libc::ppoll(
                    pfds.as_mut_ptr(),
                    pfds.len() as libc::nfds_t,
                    &ts,
                    std::ptr::null(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("ppoll");
            }
            if n == 0 {
                continue;
            }
            let nctl = self.ctl.len();
            let quiesced = QUIESCE.load(Relaxed);
            for (i, p) in pfds[2 + nctl..].iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read_client(i, quiesced);
                }
                if p.revents & libc::POLLOUT != 0 {
                    let m = self.metrics.clone();
                    self.conns[i].flush(&m);
                }
            }
            if pfds[0].revents != 0 {
                self.accept_clients();
            }
            if pfds[1].revents != 0 {
                self.accept_control();
            }
            let ready: Vec<usize> = (0..nctl).filter(|&i| pfds[2 + i].revents != 0).collect();
            for i in ready {
                self.read_control(i);
                if self.exit {
                    break;
                }
            }
            self.ctl.retain(|c| !c.closed);
            self.reap();
        }
        Ok(())
    }

    fn reap(&mut self) {
        let before = self.conns.len();
        self.conns.retain(|c| !c.closed);
        let gone = before - self.conns.len();
        if gone > 0 {
            self.metrics
                .connected_clients
                .store(self.conns.len() as u64, Relaxed);
        }
    }

    fn generate_frames(&mut self, now: u64) {
        let iv = self.interval_ns;
        for c in &mut self.conns {
            if c.pending() >= MAX_PENDING_OUT {
                continue;
            }
            let mut n = 0;
            while c.next_due <= now && n < MAX_BURST {
                let h = Header {
                    kind: Kind::Frame,
                    len: self.frame_len,
                    generation: self.generation,
                    seq: c.next_seq,
                    ts_ns: monotonic_ns(),
                    client_ts_ns: 0,
                };
                c.push(&h);
                c.next_seq += 1;
                c.next_due += iv;
                n += 1;
            }
            if c.next_due <= now {
                // Still behind after a burst: skip the missed slots, keep the grid.
                c.next_due += ((now - c.next_due) / iv + 1) * iv;
            }
            self.metrics.frames_sent.fetch_add(u64::from(n), Relaxed);
        }
    }

    fn accept_clients(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match l.accept() {
                Ok((s, peer)) => {
                    if let Err(e) = s.set_nonblocking(true).and_then(|_| s.set_nodelay(true)) {
                        tracing::warn!(%peer, error = %e, "client socket setup");
                        continue;
                    }
                    tracing::info!(%peer, "client connected");
                    let now = monotonic_ns();
                    self.conns.push(Conn {
                        stream: s,
                        peer,
                        next_seq: 0,
                        // The grid slot just passed: frame 0 goes out now, the rest on the
                        // shared grid, so one wakeup serves every connection.
                        next_due: now - now % self.interval_ns,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        out_pos: 0,
                        closed: false,
                    });
                    self.metrics.total_clients.fetch_add(1, Relaxed);
                    self.metrics
                        .connected_clients
                        .store(self.conns.len() as u64, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    break;
                }
            }
        }
    }

    fn read_client(&mut self, i: usize, quiesced: bool) {
        let generation = self.generation;
        let m = &self.metrics;
        let c = &mut self.conns[i];
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..8 {
            match (&c.stream).read(&mut chunk) {
                Ok(0) => {
                    tracing::info!(peer = %c.peer, "client closed");
                    c.closed = true;
                    return;
                }
                Ok(n) => {
                    m.bytes_received.fetch_add(n as u64, Relaxed);
                    c.inbuf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!(peer = %c.peer, error = %e, "client read failed, closing");
                    c.closed = true;
                    return;
                }
            }
        }
        let mut pos = 0;
        loop {
            let h = match Header::decode(&c.inbuf[pos..]) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = %c.peer, error = %e, "malformed client input, closing");
                    c.closed = true;
                    return;
                }
            };
            if c.inbuf.len() - pos < h.len as usize {
                break;
            }
            pos += h.len as usize;
            if h.kind != Kind::Ping {
                tracing::warn!(peer = %c.peer, kind = ?h.kind, "client sent a non-ping message, closing");
                c.closed = true;
                return;
            }
            if !quiesced {
                c.push(&Header {
                    kind: Kind::Echo,
                    len: HEADER_LEN as u32,
                    generation,
                    seq: h.seq,
                    ts_ns: monotonic_ns(),
                    client_ts_ns: h.ts_ns,
                });
            }
        }
        c.inbuf.drain(..pos);
        if c.pending() > 0 {
            c.flush(m);
        }
    }

    fn accept_control(&mut self) {
        let Some(l) = &self.control else { return };
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_ok() {
                        self.ctl.push(CtlConn {
                            stream: s,
                            buf: Vec::new(),
                            closed: false,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "control accept");
                    break;
                }
            }
        }
    }

    fn read_control(&mut self, i: usize) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match (&self.ctl[i].stream).read(&mut chunk) {
                Ok(0) => {
                    self.ctl[i].closed = true;
                    break;
                }
                Ok(n) => self.ctl[i].buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.ctl[i].closed = true;
                    break;
                }
            }
        }
        while let Some(nl) = self.ctl[i].buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.ctl[i].buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let reply = match serde_json::from_str::<Value>(text) {
                Ok(req) => self.handle(&req),
                Err(e) => Err(format!("bad request (not JSON): {e}")),
            };
            let reply = reply.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "control request refused");
                json!({"ok": false, "error": e})
            });
            let c = &mut self.ctl[i];
            if let Err(e) = send_line(&c.stream, &reply) {
                tracing::warn!(error = %e, "control reply");
                c.closed = true;
            }
            if self.exit {
                return;
            }
        }
        if self.ctl[i].buf.len() > MAX_CONTROL_LINE {
            let _ = send_line(
                &self.ctl[i].stream,
                &json!({"ok": false, "error": "control line too long"}),
            );
            self.ctl[i].closed = true;
        }
    }

    fn handle(&mut self, req: &Value) -> Result<Value, String> {
        let op = req
            .get("op")
            .and_then(Value::as_str)
            .ok_or("bad request: missing \"op\"")?;
        match op {
            "status" => Ok(self.status()),
            "checkpoint" => {
                let ms = req
                    .get("drain_timeout_ms")
                    .map(|v| {
                        v.as_u64()
                            .ok_or("drain_timeout_ms must be a non-negative integer")
                    })
                    .transpose()?
                    .unwrap_or(2000);
                self.checkpoint(Duration::from_millis(ms))
            }
            "restore" => {
                let st = req.get("state").ok_or("restore needs \"state\"")?;
                self.restore(st)
            }
            "resume" => self.resume(),
            "shutdown" => {
                self.exit = true;
                Ok(json!({"ok": true}))
            }
            other => Err(format!("unknown op {other:?}")),
        }
    }

    fn status(&self) -> Value {
        let conns = match self.role {
            Role::Active => self.conns.len(),
            Role::Standby => self.restored.as_ref().map_or(0, Vec::len),
        };
        json!({
            "ok": true,
            "role": if self.role == Role::Active { "active" } else { "standby" },
            "connections": conns,
            "generation": self.generation,
            "frames_sent": self.metrics.frames_sent.load(Relaxed),
            "quiesced": QUIESCE.load(Relaxed),
        })
    }

    fn checkpoint(&mut self, drain_timeout: Duration) -> Result<Value, String> {
        if self.role != Role::Active {
            return Err("checkpoint: this server is a standby".into());
        }
        let t0 = Instant::now();
        let deadline = t0 + drain_timeout;
        self.reap();
        // 1. Pause (nothing generates frames or echoes while we are in here) and flush.
        loop {
            let m = self.metrics.clone();
            let mut waiting: Vec<libc::pollfd> = Vec::new();
            for c in &mut self.conns {
                if c.pending() > 0 {
                    c.flush(&m);
                }
                if c.pending() > 0 && !c.closed {
                    waiting.push(libc::pollfd {
                        fd: c.stream.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if waiting.is_empty() || left.is_zero() {
                break;
            }
            let ms = left.as_millis().clamp(1, 10) as libc::c_int;
            // SAFETY: valid pollfd array.
            unsafe { libc::poll(waiting.as_mut_ptr(), waiting.len() as libc::nfds_t, ms) };
        }
        self.reap();
        // 2. Drain: wait until the peers acknowledged everything.
        let mut drained = false;
        loop {
            let busy = self
                .conns
                .iter()
                .any(|c| repair::unacked_bytes(&c.stream).is_ok_and(|n| n > 0));
            if !busy {
                drained = true;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        // 3. Peer MACs, before carrier loss flushes the table.
        let arp = netif::arp_table().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the neighbour table");
            Default::default()
        });
        let t1 = Instant::now();
        // 4. Isolate. If this fails nothing was lost: the server just keeps serving.
        netif::set_link_up(&self.args.iface, false)
            .map_err(|e| format!("isolate: {} admin-down failed: {e}", self.args.iface))?;
        let t2 = Instant::now();
        // 5. Repair-checkpoint every connection; dropping them closes silently.
        let mut saved = Vec::new();
        let mut errors = Vec::new();
        let conns = std::mem::take(&mut self.conns);
        for c in &conns {
            match repair::checkpoint(&c.stream) {
                Ok(tcp) => {
                    let mac = arp.get(tcp.peer.ip()).map(netif::mac_to_string);
                    saved.push(SavedConn {
                        tcp,
                        app: AppConn {
                            next_seq: c.next_seq,
                            next_due_ns: c.next_due,
                            partial_in: c.inbuf.clone(),
                            pending_out: c.out[c.out_pos..].to_vec(),
                        },
                        peer_mac: mac,
                    });
                }
                Err(e) => {
                    tracing::warn!(peer = %c.peer, error = %e, "checkpoint failed; connection lost");
                    errors.push(format!("{}: {e}", c.peer));
                }
            }
        }
        drop(conns);
        let t3 = Instant::now();
        self.listener = None;
        self.metrics.connected_clients.store(0, Relaxed);
        let m = &self.metrics;
        let state = SavedServer {
            version: STATE_VERSION,
            generation: self.generation,
            total_clients: m.total_clients.load(Relaxed),
            bytes_sent: m.bytes_sent.load(Relaxed),
            bytes_received: m.bytes_received.load(Relaxed),
            frames_sent: m.frames_sent.load(Relaxed),
            migrations_restored: m.migrations_restored.load(Relaxed),
            conns: saved,
        };
        let n = state.conns.len();
        let unacked: usize = state
            .conns
            .iter()
            .map(|c| c.tcp.unacked.len() + c.tcp.unsent.len())
            .sum();
        self.exit = true;
        tracing::info!(connections = n, drained, "checkpoint done; exiting");
        let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1e3;
        Ok(json!({
            "ok": true,
            "state": serde_json::to_value(&state).map_err(|e| e.to_string())?,
            "connections": n,
            "failed": errors.len(),
            "errors": errors,
            "drained": drained,
            "unacked_bytes": unacked,
            "timings": {
                "pause_drain_ms": ms(t0, t1),
                "isolate_ms": ms(t1, t2),
                "checkpoint_ms": ms(t1, t3),
            },
        }))
    }

    fn restore(&mut self, st: &Value) -> Result<Value, String> {
        if self.role != Role::Standby {
            return Err("restore: this server is active".into());
        }
        if self.restored.is_some() {
            return Err("restore: already restored; send resume".into());
        }
        let saved: SavedServer =
            SavedServer::deserialize(st).map_err(|e| format!("restore: bad state: {e}"))?;
        if saved.version != STATE_VERSION {
            return Err(format!(
                "restore: state version {} (expected {STATE_VERSION})",
                saved.version
            ));
        }
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for sc in saved.conns {
            if let Some(mac) = sc.peer_mac.as_deref().and_then(netif::parse_mac)
                && let Err(e) = netif::set_neighbour(&self.args.iface, *sc.tcp.peer.ip(), mac)
            {
                tracing::debug!(error = %e, "neighbour install (ARP will resolve)");
            }
            match repair::restore(&sc.tcp) {
                Ok(sock) => out.push(Restored {
                    sock,
                    app: sc.app,
                    local: *sc.tcp.local.ip(),
                    peer: SocketAddr::V4(sc.tcp.peer),
                }),
                Err(e) => {
                    tracing::warn!(peer = %sc.tcp.peer, error = %e, "restore failed");
                    errors.push(format!("{}: {e}", sc.tcp.peer));
                }
            }
        }
        if out.is_empty() && !errors.is_empty() {
            return Err(format!("restore failed: {}", errors.join("; ")));
        }
        match netif::GarpSender::open(&self.args.iface) {
            Ok(g) => self.garp = Some(g),
            Err(e) => tracing::warn!(iface = %self.args.iface, error = %e, "no gratuitous ARP"),
        }
        let t1 = Instant::now();
        let n = out.len();
        self.restored = Some(out);
        self.generation = saved.generation.wrapping_add(1);
        let m = &self.metrics;
        m.generation.store(u64::from(self.generation), Relaxed);
        m.total_clients.store(saved.total_clients, Relaxed);
        m.bytes_sent.store(saved.bytes_sent, Relaxed);
        m.bytes_received.store(saved.bytes_received, Relaxed);
        m.frames_sent.store(saved.frames_sent, Relaxed);
        m.migrations_restored
            .store(saved.migrations_restored + 1, Relaxed);
        tracing::info!(
            connections = n,
            generation = self.generation,
            "restored (repair mode)"
        );
        Ok(json!({
            "ok": true,
            "connections": n,
            "failed": errors.len(),
            "errors": errors,
            "timings": {"restore_ms": t1.duration_since(t0).as_secs_f64() * 1e3},
        }))
    }

    fn resume(&mut self) -> Result<Value, String> {
        if self.role != Role::Standby {
            return Err("resume: this server is already active".into());
        }
        if self.restored.is_none() {
            return Err("resume: nothing restored yet; send restore first".into());
        }
        let t0 = Instant::now();
        // Listen first: if the port is taken we fail before touching the connections.
        self.listen().map_err(|e| format!("resume: {e:#}"))?;
        // Segments sent before the link runs are lost, and a restored socket has no RTT
        // estimate: losing them costs a 1 s probe timer. Carrier normally comes in
        // microseconds; on a loaded machine linkwatch can take tens of milliseconds.
        let running = netif::wait_running(&self.args.iface, CARRIER_WAIT).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "carrier check");
            false
        });
        if !running {
            tracing::warn!(iface = %self.args.iface, wait = ?CARRIER_WAIT, "no carrier; resuming anyway");
        }
        let t1 = Instant::now();
        let restored = self.restored.take().unwrap_or_default();
        let ips: HashSet<Ipv4Addr> = restored.iter().map(|r| r.local).collect();
        if let Some(g) = &self.garp {
            for ip in ips {
                if let Err(e) = g.send(ip) {
                    tracing::warn!(%ip, error = %e, "gratuitous ARP");
                }
            }
        }
        let t_garp = Instant::now();
        let mut errors = Vec::new();
        let now = monotonic_ns();
        for r in restored {
            let stream = r.sock.finish().and_then(|s| {
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Ok(s)
            });
            match stream {
                Ok(stream) => {
                    let mut c = Conn {
                        stream,
                        peer: r.peer,
                        next_seq: r.app.next_seq,
                        // Same machine: CLOCK_MONOTONIC is shared, so the grid continues. A
                        // schedule far in the future can only come from another clock: restart.
                        next_due: if r.app.next_due_ns > now + self.interval_ns {
                            now
                        } else {
                            r.app.next_due_ns
                        },
                        inbuf: r.app.partial_in,
                        out: r.app.pending_out,
                        out_pos: 0,
                        closed: false,
                    };
                    c.flush(&self.metrics);
                    self.conns.push(c);
                }
                Err(e) => {
                    tracing::warn!(peer = %r.peer, error = %e, "finish failed; connection lost");
                    errors.push(format!("{}: {e}", r.peer));
                }
            }
        }
        let t_finish = Instant::now();
        self.role = Role::Active;
        // Frames that fell due during the freeze go out now (bounded by MAX_BURST).
        self.generate_frames(monotonic_ns());
        for c in &mut self.conns {
            c.flush(&self.metrics);
        }
        let t2 = Instant::now();
        self.metrics
            .connected_clients
            .store(self.conns.len() as u64, Relaxed);
        tracing::info!(connections = self.conns.len(), "resumed");
        let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1e3;
        Ok(json!({
            "ok": true,
            "connections": self.conns.len(),
            "failed": errors.len(),
            "errors": errors,
            "carrier": running,
            "timings": {
                "resume_ms": ms(t0, t2),
                "carrier_wait_ms": ms(t0, t1),
                "garp_ms": ms(t1, t_garp),
                "finish_ms": ms(t_garp, t_finish),
                "first_frames_ms": ms(t_finish, t2),
            },
        }))
    }
}

fn send_line(s: &UnixStream, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let r = (&*s).write_all(&line);
    let _ = s.set_nonblocking(true);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_accepts_go_style() {
        assert_eq!(
            parse_listen_addr(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_listen_addr("nonsense").is_err());
    }
}
