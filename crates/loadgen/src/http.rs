//! A minimal HTTP/1.x GET responder for `/metrics`: one short request per connection, no
//! keep-alive. Enough for the collector, curl and Prometheus, and it needs no async runtime
//! in a tool that is otherwise blocking threads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{LoadgenError, Result};

/// Produces the body for a GET path: `Some((content_type, body))`, or `None` for 404.
pub(crate) type Handler = Box<dyn Fn(&str) -> Option<(&'static str, String)> + Send>;

/// Bind `addr` and serve until `stop` is set. Returns the bound address (useful with port 0)
/// and the server thread.
pub(crate) fn serve(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handler: Handler,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener =
        TcpListener::bind(addr).map_err(|e| LoadgenError::io(format!("bind {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| LoadgenError::io("metrics listener address", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| LoadgenError::io("metrics listener nonblocking", e))?;
    let th = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = answer(s, &handler) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| LoadgenError::io("spawn metrics thread", e))?;
    Ok((local, th))
}

fn answer(mut s: TcpStream, handler: &Handler) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else {
        match handler(path) {
            Some((ctype, body)) => ("200 OK", ctype, body),
            None => ("404 Not Found", "text/plain", "not found\n".to_string()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}
