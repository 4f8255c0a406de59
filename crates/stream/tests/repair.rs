//! TCP repair round trip between two namespaces joined by a veth pair (root only): the server
//! end is checkpointed with unread bytes in its receive queue and unacknowledged bytes in its
//! send queue, closed silently, rebuilt in the same namespace, and then carries data both ways
//! with nothing lost or duplicated.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{NetNs, root_or_skip};
use stream::repair;

fn pattern(tag: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

fn read_exact_timeout(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).expect("read_exact");
    v
}

fn assert_nothing_more(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("unexpected extra data or close: {other:?}"),
    }
}

fn maxseg(s: &TcpStream) -> u32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: one int out.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    v as u32
}

#[test]
fn checkpoint_silent_close_restore_keeps_the_stream_exact() {
    if !root_or_skip("TCP repair needs CAP_NET_ADMIN and namespaces") {
        return;
    }
    let pid = std::process::id();
    let x = NetNs::new(format!("sbt-str-{pid}-rx"));
    let y = NetNs::new(format!("sbt-str-{pid}-ry"));
    x.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &y.name,
    ]);
    x.ip(&["addr", "add", "10.88.0.1/24", "dev", "eth0"]);
    y.ip(&["addr", "add", "10.88.0.2/24", "dev", "eth0"]);
    x.ip(&["link", "set", "eth0", "up"]);
    y.ip(&["link", "set", "eth0", "up"]);

    let listener = x.run(|| TcpListener::bind("10.88.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let mut client = y.run(move || TcpStream::connect(addr).unwrap());
    let (mut server, _) = listener.accept().unwrap();
    let mss_before = maxseg(&server);

    for cycle in 0..3u8 {
        // Unread bytes at the server.
        let a = pattern(cycle, 100);
        client.write_all(&a).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        // Isolate, then the server sends into the void. Even cycles remove the client's
        // address (its packets are dropped on arrival: the bytes are sent, never acked); odd
        // cycles take the client's link down (no carrier at the server: the bytes stay unsent).
        let by_addr = cycle % 2 == 0;
        if by_addr {
            y.ip(&["addr", "del", "10.88.0.2/24", "dev", "eth0"]);
        } else {
            y.ip(&["link", "set", "eth0", "down"]);
        }
        let b = pattern(cycle ^ 0x55, 3000);
        server.write_all(&b).unwrap();
        std::thread::sleep(Duration::from_millis(20));

        let st = repair::checkpoint(&server).expect("checkpoint");
        assert_eq!(st.recv_queue, a, "receive queue");
        let mut sendq = st.unacked.clone();
        sendq.extend_from_slice(&st.unsent);
        assert_eq!(sendq, b, "send queue");
        if by_addr {
            assert_eq!(st.unacked.len(), 3000, "all sent, none acked");
        }
        assert_eq!(
            st.tcpi_options & repair::TCPI_OPT_TIMESTAMPS,
            repair::TCPI_OPT_TIMESTAMPS
        );
        drop(server); // silent close in repair mode

        // The state survives the JSON trip the control protocol makes.
        let st: repair::TcpState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        let restored = x.run(move || repair::restore(&st).expect("restore"));
        assert_eq!(restored.pending_len(), 3000);
        if by_addr {
            y.ip(&["addr", "add", "10.88.0.2/24", "dev", "eth0"]);
        } else {
            y.ip(&["link", "set", "eth0", "up"]);
        }
        server = restored.finish().expect("finish");

        assert_eq!(
            read_exact_timeout(&mut server, 100),
            a,
            "restored receive queue"
        );
        let c = pattern(cycle ^ 0xaa, 50);
        client.write_all(&c).unwrap();
        assert_eq!(read_exact_timeout(&mut server, 50), c, "new client bytes");
        assert_eq!(
            read_exact_timeout(&mut client, 3000),
            b,
            "unacked bytes delivered once"
        );
        let d = pattern(cycle ^ 0x0f, 1000);
        server.write_all(&d).unwrap();
        assert_eq!(read_exact_timeout(&mut client, 1000), d, "new server bytes");
        assert_nothing_more(&mut client);
        assert_nothing_more(&mut server);
        assert_eq!(
            maxseg(&server),
            mss_before,
            "MSS kept (TCP_MAXSEG before connect)"
        );
    }
}
