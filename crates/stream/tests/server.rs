//! The server on loopback, no root needed: frames on schedule, ping/echo, malformed input,
//! SIGUSR2 quiesce, the control protocol's status and error replies (including a checkpoint
//! that cannot isolate and must leave the server serving), metrics, shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use stream::protocol::{Header, Kind};
use stream::{Error, ServerArgs, control_request};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    /// Next message, or None on timeout.
    fn next(&mut self, timeout: Duration) -> Option<Header> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(h)) = Header::decode(&self.buf)
                && self.buf.len() >= h.len as usize
            {
                self.buf.drain(..h.len as usize);
                return Some(h);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

fn ping(seq: u64) -> Vec<u8> {
    Header::ping(seq).to_vec()
}

/// Removes the control socket even when the test fails before `shutdown`.
struct RmOnDrop(PathBuf);
impl Drop for RmOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn serves_frames_echoes_and_control_requests() {
    let (port, mport) = (free_port(), free_port());
    let ctl = std::env::temp_dir().join(format!("sbt-str-{}-srv.sock", std::process::id()));
    let _guard = RmOnDrop(ctl.clone());
    let args = ServerArgs {
        signaling_addr: format!("127.0.0.1:{port}"),
        metrics_addr: format!("127.0.0.1:{mport}"),
        fps: 200,
        frame_size: 100,
        control: Some(ctl.clone()),
        standby: false,
        iface: "sbt-no-such0".into(),
    };
    let server = std::thread::spawn(move || stream::run(args));
    let req = |v: serde_json::Value| control_request(&ctl, &v, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while req(json!({"op":"status"})).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = Reader { s, buf: Vec::new() };
    // Frames: seq from 0, the configured size, generation 0, about 200/s.
    let t0 = Instant::now();
    for k in 0..40u64 {
        let h = r.next(Duration::from_secs(1)).expect("frame");
        assert_eq!(
            (h.kind, h.seq, h.len, h.generation),
            (Kind::Frame, k, 100, 0)
        );
    }
    let el = t0.elapsed().as_secs_f64();
    assert!(
        (0.12..0.5).contains(&el),
        "40 frames at 200 fps took {el} s"
    );

    // A ping split in two writes is still answered.
    let p = ping(7);
    w.write_all(&p[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    w.write_all(&p[10..]).unwrap();
    let mut last = 39;
    let echo = loop {
        let h = r.next(Duration::from_secs(1)).expect("echo");
        if h.kind == Kind::Echo {
            break h;
        }
        assert_eq!(h.seq, last + 1);
        last = h.seq;
    };
    assert_eq!(echo.seq, 7);
    assert_eq!(
        echo.client_ts_ns,
        Header::decode(&p).unwrap().unwrap().ts_ns
    );

    // Control: status, then requests that must fail without harming the server.
    let st = req(json!({"op":"status"})).unwrap();
    assert_eq!(
        (st["role"].as_str(), st["connections"].as_u64()),
        (Some("active"), Some(1))
    );
    for bad in [
        json!({"op":"dance"}),
        json!({"nop":1}),
        json!({"op":"resume"}),
        json!({"op":"restore","state":{}}),
        json!({"op":"checkpoint","drain_timeout_ms":"soon"}),
        // Isolation fails (no such interface): the server must keep its clients.
        json!({"op":"checkpoint","drain_timeout_ms":50}),
    ] {
        match req(bad.clone()) {
            Err(Error::ControlRefused { error }) => assert!(!error.is_empty()),
            other => panic!("{bad}: expected a refusal, got {other:?}"),
        }
    }
    {
        // Not JSON at all.
        let mut c = std::os::unix::net::UnixStream::connect(&ctl).unwrap();
        c.write_all(b"hello\n").unwrap();
        let mut out = String::new();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 512];
        let n = c.read(&mut b).unwrap();
        out.push_str(std::str::from_utf8(&b[..n]).unwrap());
        assert!(out.contains("\"ok\":false"), "{out}");
    }
    // Still streaming, with no hole after the failed checkpoint.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(200) {
        if let Some(h) = r.next(Duration::from_secs(1))
            && h.kind == Kind::Frame
        {
            assert_eq!(h.seq, last + 1);
            last = h.seq;
        }
    }

    // SIGUSR2 quiesces: no frames, no echoes; a second one resumes.
    // SAFETY: raise only signals this process; the server installed the handler.
    unsafe { libc::raise(libc::SIGUSR2) };
    std::thread::sleep(Duration::from_millis(50));
    while r.next(Duration::from_millis(50)).is_some() {}
    w.write_all(&ping(8)).unwrap();
    assert!(
        r.next(Duration::from_millis(300)).is_none(),
        "quiesced server sent something"
    );
    assert_eq!(req(json!({"op":"status"})).unwrap()["quiesced"], true);
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGUSR2) };
    let h = r.next(Duration::from_secs(1)).expect("frames again");
    assert_eq!(h.kind, Kind::Frame);

    // A second client that sends garbage is closed; the first keeps streaming.
    let mut g = TcpStream::connect(("127.0.0.1", port)).unwrap();
    g.write_all(&[0xde; 64]).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut sink = Vec::new();
    let _ = g.read_to_end(&mut sink); // ends with EOF or reset once the server closes it
    assert!(r.next(Duration::from_secs(1)).is_some());

    // Metrics.
    let mut m = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    m.read_to_string(&mut body).unwrap();
    assert!(body.contains("\ntotal_clients 2\n"), "{body}");
    assert!(body.contains("\ngeneration 0\n"), "{body}");

    assert!(req(json!({"op":"shutdown"})).is_ok());
    server.join().unwrap().unwrap();
    assert!(
        !PathBuf::from(&ctl).exists(),
        "control socket removed on exit"
    );
}
