//! Client side of the migration control protocol: one JSON object per line each way over a
//! Unix stream socket (see the server module for the operations).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// Send one request and wait for its one-line reply. A reply with `"ok":false` becomes
/// [`Error::ControlRefused`], so callers can use `?` and still see the server's message.
pub fn control_request(
    path: &Path,
    req: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut r = BufReader::new(s);
    let mut reply = String::new();
    r.read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(Error::BadControl {
            reason: "connection closed without a reply".into(),
        });
    }
    let v: serde_json::Value = serde_json::from_str(reply.trim_end())?;
    match v.get("ok").and_then(|o| o.as_bool()) {
        Some(true) => Ok(v),
        Some(false) => Err(Error::ControlRefused {
            error: v
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("(no message)")
                .to_string(),
        }),
        None => Err(Error::BadControl {
            reason: format!("reply without \"ok\": {}", reply.trim_end()),
        }),
    }
}
