//! Parse arbitrary bytes, then call every wire-view accessor the returned
//! `Headers` allow, on the slices they name. Any panic is a bug: the parser
//! promised the views would accept those slices.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packet::wire::{arp, ethernet, icmp, ipv4, ipv6, tcp, udp};
use packet::{Fragment, L3Kind, L4Kind, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse(data) else { return };
    let len = data.len();
    assert!(h.l3_off <= h.l4_off);
    assert!(usize::from(h.l4_off) + usize::from(h.l4_len) <= usize::from(h.l3_end));
    assert!(usize::from(h.l3_end) <= len);
    let _ = (
        h.vid(),
        h.payload(data),
        h.ports(data),
        h.ipv4_src(data),
        h.ipv4_dst(data),
    );

    let eth = ethernet::Frame::new_checked(data).expect("parse accepted a short ethernet frame");
    let _ = (
        eth.src_addr(),
        eth.dst_addr(),
        eth.ethertype(),
        eth.payload().len(),
        eth.to_string(),
    );

    let l3 = h.l3_bytes(data);
    let l4 = h.l4_bytes(data);
    let mut src4 = None;
    let mut addrs6 = None;
    match h.l3 {
        L3Kind::Ipv4 => {
            let p = ipv4::Packet::new_checked(l3).expect("ipv4 view refused parsed packet");
            assert_eq!(p.header_len(), usize::from(h.l3_len));
            let _ = (
                p.version(),
                p.dscp(),
                p.ecn(),
                p.total_len(),
                p.ident(),
                p.dont_frag(),
            );
            let _ = (
                p.more_frags(),
                p.frag_offset(),
                p.ttl(),
                p.protocol(),
                p.checksum(),
            );
            let _ = (p.verify_checksum(), p.payload().len(), p.to_string());
            let _ = ipv4::Repr::parse(&p);
            src4 = Some((p.src_addr(), p.dst_addr()));
            // Rewrites on a copy must not panic and must keep the header checksum valid.
            let mut copy = data.to_vec();
            let was_ok = p.verify_checksum();
            packet::checksum::rewrite_ipv4_addr(
                &mut copy,
                &h,
                packet::checksum::Side::Dst,
                [192, 0, 2, 1].into(),
            )
            .expect("rewrite on parsed ipv4");
            let q = ipv4::Packet::new_checked(h.l3_bytes(&copy)).expect("still ipv4");
            assert_eq!(q.verify_checksum(), was_ok);
        }
        L3Kind::Ipv6 => {
            let p = ipv6::Packet::new_checked(l3).expect("ipv6 view refused parsed packet");
            let _ = (
                p.version(),
                p.traffic_class(),
                p.flow_label(),
                p.payload_len(),
                p.next_header(),
            );
            let _ = (p.hop_limit(), p.payload().len(), p.to_string());
            addrs6 = Some((p.src_addr(), p.dst_addr()));
        }
        L3Kind::Arp => {
            let p = arp::Packet::new_checked(l3).expect("arp view refused parsed packet");
            let _ = (
                p.operation(),
                p.source_hardware_addr(),
                p.source_protocol_addr(),
            );
            let _ = (
                p.target_hardware_addr(),
                p.target_protocol_addr(),
                p.to_string(),
            );
            arp::Repr::parse(&p).expect("parse accepted unsupported arp");
        }
        L3Kind::None | L3Kind::Other => assert_eq!(h.l4, L4Kind::None),
    }
    if h.fragment == Fragment::Later {
        assert_eq!(h.l4, L4Kind::None);
    }
    match h.l4 {
        L4Kind::Tcp => {
            let p = tcp::Packet::new_checked(l4).expect("tcp view refused parsed segment");
            assert_eq!(p.header_len(), usize::from(h.l4_len));
            let _ = (
                p.src_port(),
                p.dst_port(),
                p.seq_number(),
                p.ack_number(),
                p.flags(),
            );
            let _ = (
                p.window_len(),
                p.checksum(),
                p.urgent_at(),
                p.payload().len(),
                p.to_string(),
            );
            if let Some((s, d)) = src4 {
                let _ = p.verify_checksum_ipv4(s, d);
            }
            if let Some((s, d)) = addrs6 {
                let _ = p.verify_checksum_ipv6(s, d);
            }
            let mut copy = data.to_vec();
            packet::checksum::rewrite_l4_port(&mut copy, &h, packet::checksum::Side::Src, 1)
                .expect("tcp port");
        }
        L4Kind::Udp => {
            let p = udp::Packet::new_checked(l4).expect("udp view refused parsed datagram");
            let _ = (
                p.src_port(),
                p.dst_port(),
                p.len(),
                p.checksum(),
                p.payload().len(),
                p.to_string(),
            );
            if let Some((s, d)) = src4 {
                let _ = p.verify_checksum_ipv4(s, d);
                let _ = udp::Repr::parse_ipv4(&p, s, d);
            }
            if let Some((s, d)) = addrs6 {
                let _ = p.verify_checksum_ipv6(s, d);
            }
            let mut copy = data.to_vec();
            packet::checksum::rewrite_l4_port(&mut copy, &h, packet::checksum::Side::Dst, 1)
                .expect("udp port");
        }
        L4Kind::Icmp | L4Kind::Icmpv6 => {
            let p = icmp::Packet::new_checked(l4).expect("icmp view refused parsed message");
            let _ = (
                p.msg_type(),
                p.message(),
                p.message6(),
                p.code(),
                p.checksum(),
            );
            let _ = (
                p.echo_ident(),
                p.echo_seq_no(),
                p.body().len(),
                p.verify_checksum(),
                p.to_string(),
            );
            if let Some((s, d)) = addrs6 {
                let _ = p.verify_checksum_v6(s, d);
            }
        }
        L4Kind::None | L4Kind::Other(_) => assert_eq!(h.l4_len, 0),
    }
});
