//! Test doubles: a fake stream server that follows a script, and a fake HTTP endpoint.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stream::protocol::{DEFAULT_FRAME_LEN, HEADER_LEN, Header, Kind, monotonic_ns};

/// What the fake server does on each connection, in order. After the script it keeps
/// sending consecutive frames until the test ends (unless the script closed).
#[derive(Debug, Clone)]
pub enum Step {
    /// Send this many consecutive frames at the frame rate.
    Frames(u64),
    /// Advance the sequence number without sending (lost frames).
    Skip(u64),
    /// Send the last frame's sequence number again.
    Repeat,
    /// Wait this much longer than one frame interval before the next frame.
    Pause(Duration),
    /// Use this generation for the following frames.
    Generation(u32),
    /// Send bytes that are not a message.
    Garbage,
    /// Close the connection.
    Close,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    pub fn start(fps: f64, script: Vec<Step>) -> FakeServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), fps, script)
    }

    pub fn start_on(addr: SocketAddr, fps: f64, script: Vec<Step>) -> FakeServer {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_nodelay(true).unwrap();
                        let (st, script) = (st.clone(), script.clone());
                        std::thread::spawn(move || serve_conn(s, fps, script, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer { addr, stop }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_conn(s: TcpStream, fps: f64, script: Vec<Step>, stop: Arc<AtomicBool>) {
    let writer = Arc::new(Mutex::new(s.try_clone().unwrap()));
    let closed = Arc::new(AtomicBool::new(false));
    // Echo pings.
    {
        let (writer, stop, closed) = (writer.clone(), stop.clone(), closed.clone());
        let mut r = s.try_clone().unwrap();
        r.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) && !closed.load(Ordering::SeqCst) {
                match r.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(_) => continue,
                }
                while let Ok(Some(h)) = Header::decode(&pending) {
                    if pending.len() < h.len as usize {
                        break;
                    }
                    pending.drain(..h.len as usize);
                    if h.kind == Kind::Ping {
                        let echo = Header {
                            kind: Kind::Echo,
                            len: HEADER_LEN as u32,
                            generation: 0,
                            seq: h.seq,
                            ts_ns: monotonic_ns(),
                            client_ts_ns: h.ts_ns,
                        }
                        .to_vec();
                        if writer.lock().unwrap().write_all(&echo).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let interval = Duration::from_secs_f64(1.0 / fps);
    let mut next = Instant::now();
    let mut seq = 0u64;
    let mut generation = 0u32;
    let send = |seq: u64, generation: u32| -> bool {
        let f = Header {
            kind: Kind::Frame,
            len: DEFAULT_FRAME_LEN as u32,
            generation,
            seq,
            ts_ns: monotonic_ns(),
            client_ts_ns: 0,
        }
        .to_vec();
        writer.lock().unwrap().write_all(&f).is_ok()
    };
    let pace = |next: &mut Instant| {
        let now = Instant::now();
        if *next > now {
            std::thread::sleep(*next - now);
        }
        *next += interval;
    };
    let mut steps = script.into_iter();
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match steps.next().unwrap_or(Step::Frames(1)) {
            Step::Frames(n) => {
                for _ in 0..n {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    pace(&mut next);
                    if !send(seq, generation) {
                        closed.store(true, Ordering::SeqCst);
                        return;
                    }
                    seq += 1;
                }
            }
            Step::Skip(n) => seq += n,
            Step::Repeat => {
                pace(&mut next);
                send(seq.saturating_sub(1), generation);
            }
            Step::Pause(d) => next += d,
            Step::Generation(g) => generation = g,
            Step::Garbage => {
                let _ = writer.lock().unwrap().write_all(&[0xde; 64]);
            }
            Step::Close => {
                closed.store(true, Ordering::SeqCst);
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
    closed.store(true, Ordering::SeqCst);
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// An HTTP server answering GET paths with fixed bodies.
pub struct FakeHttp {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeHttp {
    pub fn start(routes: HashMap<&'static str, String>) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req);
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let resp = match routes.get(path.as_str()) {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                let _ = s.write_all(resp.as_bytes());
            }
        });
        FakeHttp { addr, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A fresh empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "switchboard-loadgen-{name}-{}-{}",
            std::process::id(),
            monotonic_ns()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A local address nothing listens on (bound then released).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
