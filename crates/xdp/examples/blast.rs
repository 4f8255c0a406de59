//! `blast <netns> <iface> <dst-mac> <src-ip> <dst-ip> <count> [rate-pps]`: the library's
//! [`xdp::blast`] from the command line.

use std::sync::atomic::AtomicBool;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        eprintln!("usage: blast <netns> <iface> <dst-mac> <src-ip> <dst-ip> <count> [rate-pps]");
        std::process::exit(2);
    }
    let opts = xdp::BlastOptions {
        netns: a[1].clone(),
        iface: a[2].clone(),
        dst_mac: xdp::netns::parse_mac(&a[3])?,
        src_mac: None,
        src_ip: a[4].parse()?,
        dst_ip: a[5].parse()?,
        flows: 4,
        frame_len: 60,
        rate_pps: a.get(7).map(|r| r.parse()).transpose()?,
        count: Some(a[6].parse()?),
        duration: None,
        cpu: Some(0),
        realtime: std::env::var("RT").is_ok(),
    };
    let st = xdp::blast(&opts, &AtomicBool::new(false))?;
    println!(
        "sent {} in {:?}: {:.3} Mpps",
        st.sent,
        st.elapsed,
        st.pps() / 1e6
    );
    Ok(())
}
