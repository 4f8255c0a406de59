//! Server counters and the tiny HTTP responder for `/metrics` (Prometheus text) and
//! `/health`. A plain thread with blocking sockets: scrapes are rare and tiny, and keeping them
//! off the event loop means a slow scraper can never delay a frame.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counters shared by the event loop (writer) and the metrics thread (reader).
#[derive(Debug)]
pub struct Metrics {
    pub connected_clients: AtomicU64,
    pub total_clients: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub generation: AtomicU64,
    pub migrations_restored: AtomicU64,
    start: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connected_clients: AtomicU64::new(0),
            total_clients: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            migrations_restored: AtomicU64::new(0),
            start: Instant::now(),
        }
    }
}

/// CPU use of this process between two scrapes, from `/proc/self/stat`.
#[derive(Debug)]
struct CpuSampler {
    last_wall: Instant,
    last_ticks: u64,
}

impl CpuSampler {
    fn new() -> Self {
        CpuSampler {
            last_wall: Instant::now(),
            last_ticks: cpu_ticks().unwrap_or(0),
        }
    }

    fn percent(&mut self) -> f64 {
        let now = Instant::now();
        let ticks = cpu_ticks().unwrap_or(self.last_ticks);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let wall = now.duration_since(self.last_wall).as_secs_f64();
        let pct = if wall > 0.0 {
            ticks.saturating_sub(self.last_ticks) as f64 / hz / wall * 100.0
        } else {
            0.0
        };
        self.last_wall = now;
        self.last_ticks = ticks;
        pct
    }
}

/// utime + stime in clock ticks (fields 14 and 15, counted after the `)` of the command name,
/// which may itself contain spaces).
fn cpu_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field n is f[n - 3].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn memory_mb() -> f64 {
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    (rss_pages * page) as f64 / (1024.0 * 1024.0)
}

impl Metrics {
    /// The Prometheus text exposition of all counters.
    fn render(&self, cpu_percent: f64) -> String {
        let g = |name: &str, help: &str, kind: &str, v: String| {
            format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n")
        };
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        [
            g(
                "connected_clients",
                "Clients connected now.",
                "gauge",
                c(&self.connected_clients),
            ),
            g(
                "total_clients",
                "Clients accepted since the first generation.",
                "counter",
                c(&self.total_clients),
            ),
            g(
                "uptime_seconds",
                "Seconds since this process started.",
                "gauge",
                format!("{:.3}", self.start.elapsed().as_secs_f64()),
            ),
            g(
                "bytes_sent",
                "Bytes written to clients.",
                "counter",
                c(&self.bytes_sent),
            ),
            g(
                "bytes_received",
                "Bytes read from clients.",
                "counter",
                c(&self.bytes_received),
            ),
            g(
                "cpu_percent",
                "CPU use of this process since the previous scrape.",
                "gauge",
                format!("{cpu_percent:.2}"),
            ),
            g(
                "memory_mb",
                "Resident set size in MiB.",
                "gauge",
                format!("{:.2}", memory_mb()),
            ),
            g(
                "frames_sent",
                "Frames sent to clients.",
                "counter",
                c(&self.frames_sent),
            ),
            g(
                "generation",
                "Server generation: 0 for the first server, +1 per restore.",
                "gauge",
                c(&self.generation),
            ),
            g(
                "migrations_restored",
                "Restores in this server's lineage.",
                "counter",
                c(&self.migrations_restored),
            ),
        ]
        .concat()
    }
}

/// Serve `/metrics` and `/health` on `listener` until `stop` is set (checked every 200 ms).
pub(crate) fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) {
    let mut cpu = CpuSampler::new();
    while !stop.load(Relaxed) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n <= 0 {
            continue;
        }
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = answer(s, &metrics, &mut cpu) {
                    tracing::debug!(error = %e, "metrics request");
                }
            }
            Err(e) => tracing::debug!(error = %e, "metrics accept"),
        }
    }
}

fn answer(mut s: TcpStream, m: &Metrics, cpu: &mut CpuSampler) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 || buf.len() > 16 * 1024 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(buf.split(|&b| b == b'\n').next().unwrap_or(&[]));
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            m.render(cpu.percent()),
        ),
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_metrics_and_health() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(Metrics::default());
        m.frames_sent.store(42, Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || serve(l, m, stop))
        };
        let get = |path: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        };
        let body = get("/metrics");
        assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
        assert!(body.contains("\nframes_sent 42\n"), "{body}");
        for name in [
            "connected_clients",
            "total_clients",
            "uptime_seconds",
            "bytes_sent",
            "bytes_received",
            "cpu_percent",
            "memory_mb",
            "generation",
            "migrations_restored",
        ] {
            assert!(body.contains(&format!("\n{name} ")), "{name} missing");
        }
        assert!(get("/health").ends_with("\r\n\r\nok\n"));
        assert!(get("/nope").starts_with("HTTP/1.0 404"));
        stop.store(true, Relaxed);
        t.join().unwrap();
        assert!(cpu_ticks().is_some());
        assert!(memory_mb() > 0.0);
    }
}
