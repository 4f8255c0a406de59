//! Loading, attaching, pinning and reading the XDP program.
//!
//! Attach pins the bpf_link and the maps under `/sys/fs/bpf/switchboard/<netns>/<iface>/`, so
//! the program stays attached after the command exits and `stats`/`detach` find it later.
//! Interface names resolve in the *calling thread's* netns, so work for another namespace runs
//! on a short-lived thread that `setns`es first; the rest of the process stays put.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use tracing::{debug, info};

use crate::error::{Error, Result, map_err, program_err};
use crate::stats::{NSTATS, Stats};
use crate::{AttachMode, Marker};

/// The BPF object compiled by build.rs (empty when clang was missing).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_er.o"));

/// Where bpffs is expected to be mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Root of this crate's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/switchboard";
/// Pin-directory segment used when no netns name is given (the caller's own namespace).
pub const CURRENT_NETNS_DIR: &str = "_init";

const PROG_ER: &str = "xdp_er";
const PROG_PASS: &str = "xdp_pass";
const MAP_STATS: &str = "er_stats";
const MAP_CONFIG: &str = "er_config";
const MAP_VIPS: &str = "er_vips";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether this build embeds a real BPF object (false when clang/libbpf-dev were missing).
pub fn object_available() -> bool {
    !OBJECT.is_empty()
}

/// Which interface, in which namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name under /run/netns (as made by `ip netns add`); `None` is the caller's namespace.
    pub netns: Option<String>,
    /// Interface name inside that namespace.
    pub iface: String,
}

impl Target {
    /// A target in a named namespace (or the current one with `None`).
    pub fn new(netns: Option<&str>, iface: &str) -> Target {
        Target {
            netns: netns.map(str::to_string),
            iface: iface.to_string(),
        }
    }

    /// The directory holding this target's pins (validates the names as path segments).
    pub fn pin_dir(&self) -> Result<PathBuf> {
        let ns = match &self.netns {
            Some(n) => {
                check_segment("netns", n)?;
                n.as_str()
            }
            None => CURRENT_NETNS_DIR,
        };
        check_segment("iface", &self.iface)?;
        Ok(Path::new(PIN_ROOT).join(ns).join(&self.iface))
    }

    fn netns_label(&self) -> String {
        self.netns.clone().unwrap_or_else(|| "(current)".into())
    }
}

fn check_segment(what: &'static str, s: &str) -> Result<()> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(Error::Invalid {
            what,
            detail: format!("{s:?} is not a usable name"),
        });
    }
    Ok(())
}

/// How the agent is configured at attach time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// Generic (skb) or native (driver) XDP.
    pub mode: AttachMode,
    /// Marker encoding shared with the router.
    pub marker: Marker,
    /// Oldest previous generation a packet may be bounced towards (1..=15; dscp mode only).
    pub max_generation: u8,
    /// If non-empty, only packets to these destinations are bounced.
    pub vips: Vec<Ipv4Addr>,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            mode: AttachMode::Generic,
            marker: Marker::Dscp,
            max_generation: 2,
            vips: Vec::new(),
        }
    }
}

/// Mirror of `struct er_config` in the C source.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawConfig {
    marker: u32,
    max_generation: u32,
    vip_filter: u32,
    attach_mode: u32,
}

// SAFETY: plain-old-data, repr(C), no padding (four u32).
unsafe impl aya::Pod for RawConfig {}

fn xdp_mode(m: AttachMode) -> XdpMode {
    match m {
        AttachMode::Generic => XdpMode::Skb,
        AttachMode::Native => XdpMode::Driver,
    }
}

/// Run `f` on a thread that joined `netns` (or directly, for the caller's namespace).
pub(crate) fn in_netns<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let Some(ns) = netns else { return f() };
    check_segment("netns", ns)?;
    xdp::netns::in_netns(ns, || Ok(f())).map_err(|e| Error::Netns {
        netns: ns.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?
}

fn ifindex(target: &Target) -> Result<u32> {
    let missing = || Error::NoSuchInterface {
        netns: target.netns_label(),
        iface: target.iface.clone(),
    };
    let c = CString::new(target.iface.as_str()).map_err(|_| missing())?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(missing()) } else { Ok(idx) }
}

/// Make sure bpffs is mounted at /sys/fs/bpf, mounting it if not.
pub fn ensure_bpffs() -> Result<()> {
    let path = Path::new(BPFFS);
    let err = |source| Error::Bpffs {
        path: path.to_path_buf(),
        source,
    };
    let c = CString::new(BPFFS).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: statfs is plain data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(err)?;
    let fstype = c"bpf";
    let opts = c"mode=0700";
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    info!(path = BPFFS, "mounted bpffs");
    Ok(())
}

fn load_object() -> Result<Ebpf> {
    if !object_available() {
        return Err(Error::NoObject);
    }
    EbpfLoader::new()
        .load(OBJECT)
        .map_err(|e| Error::Load(Box::new(e)))
}

fn io_err(op: &'static str, path: &Path) -> impl Fn(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        op,
        path: path.clone(),
        source,
    }
}

/// Load the agent, attach it to `target`, and pin link and maps so it outlives this process.
/// Returns the pin directory.
pub fn attach(target: &Target, opts: &AttachOptions) -> Result<PathBuf> {
    if !(1..=15).contains(&opts.max_generation) {
        return Err(Error::Invalid {
            what: "max-generation",
            detail: format!("{} is outside 1..=15", opts.max_generation),
        });
    }
    let dir = target.pin_dir()?;
    let mut ebpf = load_object()?;
    ensure_bpffs()?;
    if dir.join("link").exists() {
        return Err(Error::AlreadyAttached { path: dir });
    }
    let cfg = RawConfig {
        marker: match opts.marker {
            Marker::Dscp => 0,
            Marker::Compat => 1,
        },
        max_generation: match opts.marker {
            Marker::Dscp => u32::from(opts.max_generation),
            Marker::Compat => 1,
        },
        vip_filter: u32::from(!opts.vips.is_empty()),
        attach_mode: match opts.mode {
            AttachMode::Generic => 0,
            AttachMode::Native => 1,
        },
    };
    {
        let map = ebpf.map_mut(MAP_CONFIG).ok_or(Error::Missing(MAP_CONFIG))?;
        let mut arr: Array<_, RawConfig> = Array::try_from(map).map_err(map_err(MAP_CONFIG))?;
        arr.set(0, cfg, 0).map_err(map_err(MAP_CONFIG))?;
    }
    if !opts.vips.is_empty() {
        let map = ebpf.map_mut(MAP_VIPS).ok_or(Error::Missing(MAP_VIPS))?;
        let mut vips: HashMap<_, u32, u8> = HashMap::try_from(map).map_err(map_err(MAP_VIPS))?;
        for vip in &opts.vips {
            // The program compares against iph->daddr as loaded: network byte order.
            let key = u32::from_ne_bytes(vip.octets());
            vips.insert(key, 1, 0).map_err(map_err(MAP_VIPS))?;
        }
    }
    let fd_link = in_netns(target.netns.as_deref(), || {
        let idx = ifindex(target)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_ER)
            .ok_or(Error::Missing(PROG_ER))?
            .try_into()
            .map_err(program_err(PROG_ER))?;
        prog.load().map_err(program_err(PROG_ER))?;
        let id = prog
            .attach_to_if_index(idx, xdp_mode(opts.mode))
            .map_err(program_err(PROG_ER))?;
        let link = prog.take_link(id).map_err(program_err(PROG_ER))?;
        FdLink::try_from(link).map_err(|e| Error::Pin {
            path: dir.join("link"),
            detail: format!("kernel gave a netlink attachment, not a bpf_link: {e}"),
        })
    })?;
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let pinned = (|| {
        for name in [MAP_STATS, MAP_CONFIG, MAP_VIPS] {
            let path = dir.join(pin_name(name));
            let map = ebpf.map(name).ok_or(Error::Missing(name))?;
            map.pin(&path).map_err(|e| Error::Pin {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        }
        let path = dir.join("link");
        fd_link.pin(&path).map_err(|e| Error::Pin {
            path,
            detail: e.to_string(),
        })
    })();
    if let Err(e) = pinned {
        remove_pins(&dir);
        return Err(e);
    }
    info!(
        iface = %target.iface,
        netns = %target.netns_label(),
        mode = opts.mode.as_str(),
        marker = opts.marker.as_str(),
        max_generation = opts.max_generation,
        pins = %dir.display(),
        "er-agent attached"
    );
    Ok(dir)
}

fn pin_name(map: &str) -> &str {
    match map {
        MAP_STATS => "stats",
        MAP_CONFIG => "config",
        MAP_VIPS => "vips",
        other => other,
    }
}

/// Remove every pin under `dir`, then the directory and an emptied netns directory.
fn remove_pins(dir: &Path) {
    // The link first: removing its pin detaches the program.
    let _ = std::fs::remove_file(dir.join("link"));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent); // only succeeds when empty
    }
}

/// Whether an agent is pinned for `target`.
pub fn is_attached(target: &Target) -> bool {
    target
        .pin_dir()
        .map(|d| d.join("link").exists())
        .unwrap_or(false)
}

/// Detach the agent from `target` by removing its pins (the last reference to the link).
pub fn detach(target: &Target) -> Result<()> {
    let dir = target.pin_dir()?;
    if !dir.exists() {
        return Err(Error::NotAttached { path: dir });
    }
    let link = dir.join("link");
    if link.exists() {
        std::fs::remove_file(&link).map_err(io_err("unpin", &link))?;
    }
    remove_pins(&dir);
    if dir.exists() {
        return Err(Error::Io {
            op: "remove",
            path: dir,
            source: std::io::Error::other("directory not empty after unpinning"),
        });
    }
    info!(iface = %target.iface, netns = %target.netns_label(), "er-agent detached");
    Ok(())
}

/// Read the counters (summed over CPUs) and the configuration of the agent on `target`.
pub fn stats(target: &Target) -> Result<Stats> {
    let dir = target.pin_dir()?;
    let stats_path = dir.join("stats");
    if !stats_path.exists() {
        return Err(Error::NotAttached { path: dir });
    }
    let from_pin = |path: &Path, name: &'static str| -> Result<Map> {
        let data = MapData::from_pin(path).map_err(map_err(name))?;
        Map::from_map_data(data).map_err(map_err(name))
    };
    let map = from_pin(&stats_path, MAP_STATS)?;
    let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_err(MAP_STATS))?;
    let mut slots = Vec::with_capacity(NSTATS as usize);
    for i in 0..NSTATS {
        let per_cpu = arr.get(&i, 0).map_err(map_err(MAP_STATS))?;
        slots.push(per_cpu.iter().copied().fold(0u64, u64::wrapping_add));
    }
    let mut s = Stats::from_slots(&slots);
    s.iface = target.iface.clone();
    s.netns = target.netns.clone();
    let cfg_map = from_pin(&dir.join("config"), MAP_CONFIG)?;
    let cfg_arr: Array<_, RawConfig> = Array::try_from(cfg_map).map_err(map_err(MAP_CONFIG))?;
    let cfg = cfg_arr.get(&0, 0).map_err(map_err(MAP_CONFIG))?;
    s.marker = match cfg.marker {
        0 => Some(Marker::Dscp),
        1 => Some(Marker::Compat),
        _ => None,
    };
    s.mode = match cfg.attach_mode {
        0 => Some(AttachMode::Generic),
        1 => Some(AttachMode::Native),
        _ => None,
    };
    s.max_generation = cfg.max_generation;
    s.vip_filter = cfg.vip_filter != 0;
    s.driver_xdp_tx_errors = driver_xdp_tx_errors(target);
    debug!(iface = %target.iface, rx = s.rx_packets, bounced = s.bounced, "er-agent stats read");
    Ok(s)
}

/// The driver's XDP_TX error count (`ethtool -S`, e.g. veth's `rx_queue_N_xdp_tx_errors`).
///
/// Why: native-mode XDP_TX failures (a veth peer without a native XDP program) drop frames
/// after the program returned, so the program's own counters cannot see them. `None` when
/// ethtool is missing or the driver reports no such counter.
fn driver_xdp_tx_errors(target: &Target) -> Option<u64> {
    let out = in_netns(target.netns.as_deref(), || {
        // A child forked from this thread inherits its network namespace.
        Ok(std::process::Command::new("ethtool")
            .args(["-S", &target.iface])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output())
    })
    .ok()?
    .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_xdp_tx_errors(&String::from_utf8_lossy(&out.stdout))
}

fn parse_xdp_tx_errors(text: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        if name.ends_with("xdp_tx_errors")
            && let Ok(v) = value.trim().parse::<u64>()
        {
            total = Some(total.unwrap_or(0) + v);
        }
    }
    total
}

/// A do-nothing XDP program held on an interface for as long as this value lives.
///
/// Why: on veth, frames an XDP program sends with XDP_TX in *native* mode are only delivered
/// when the peer device also runs a native XDP program (the kernel's veth_xdp_flush wakes the
/// peer only then). Put this on the router-facing peer of a server veth to use native mode.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl std::fmt::Debug for PassProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassProgram")
    }
}

/// Attach [`PassProgram`] (XDP_PASS) to `target` in `mode`; detached when the value drops.
pub fn hold_pass_program(target: &Target, mode: AttachMode) -> Result<PassProgram> {
    let mut ebpf = load_object()?;
    in_netns(target.netns.as_deref(), || {
        let idx = ifindex(target)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_PASS)
            .ok_or(Error::Missing(PROG_PASS))?
            .try_into()
            .map_err(program_err(PROG_PASS))?;
        prog.load().map_err(program_err(PROG_PASS))?;
        prog.attach_to_if_index(idx, xdp_mode(mode))
            .map_err(program_err(PROG_PASS))?;
        Ok(())
    })?;
    Ok(PassProgram { _ebpf: ebpf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_layout_and_validation() {
        let t = Target::new(Some("srv"), "veth0");
        assert_eq!(
            t.pin_dir().unwrap(),
            PathBuf::from("/sys/fs/bpf/switchboard/srv/veth0")
        );
        let t = Target::new(None, "eth0");
        assert_eq!(
            t.pin_dir().unwrap(),
            PathBuf::from("/sys/fs/bpf/switchboard/_init/eth0")
        );
        for bad in ["", "..", "a/b"] {
            assert!(Target::new(None, bad).pin_dir().is_err(), "{bad:?}");
            assert!(Target::new(Some(bad), "eth0").pin_dir().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn object_is_embedded_when_clang_present() {
        // CI installs clang and libbpf-dev; a silent fallback to the empty object there would
        // ship an agent that cannot attach.
        if std::process::Command::new("clang")
            .arg("--version")
            .output()
            .is_ok()
            && Path::new("/usr/include/bpf/bpf_helpers.h").exists()
        {
            assert!(object_available());
            assert_eq!(&OBJECT[..4], b"\x7fELF");
        }
    }

    #[test]
    fn max_generation_out_of_range_is_rejected_before_loading() {
        let t = Target::new(Some("no-such-ns-eragent"), "x");
        let opts = AttachOptions {
            max_generation: 16,
            ..AttachOptions::default()
        };
        assert!(matches!(
            attach(&t, &opts),
            Err(Error::Invalid {
                what: "max-generation",
                ..
            })
        ));
    }

    #[test]
    fn ethtool_xdp_tx_errors_are_summed_over_queues() {
        let text = "NIC statistics:\n     peer_ifindex: 5\n     rx_queue_0_xdp_tx: 3\n     \
                    rx_queue_0_xdp_tx_errors: 1\n     rx_queue_1_xdp_tx_errors: 2\n";
        assert_eq!(parse_xdp_tx_errors(text), Some(3));
        assert_eq!(
            parse_xdp_tx_errors("NIC statistics:\n     rx_packets: 9\n"),
            None
        );
    }

    #[test]
    fn raw_config_matches_c_layout() {
        assert_eq!(std::mem::size_of::<RawConfig>(), 16);
    }
}
