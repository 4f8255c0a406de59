//! Raw `bpf(2)` calls with `#[repr(C)]` slices of `union bpf_attr`.
//!
//! Each command gets its own struct holding only the fields it uses, laid out at the kernel's
//! offsets (checked against `<linux/bpf.h>` in the tests). The kernel accepts an attr shorter
//! than its own union and zero-fills the rest, so newer kernels keep working.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::insn::Insn;
use crate::{Error, Result};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_LINK_CREATE: libc::c_int = 28;

/// `BPF_PROG_TYPE_XDP`.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_XDP` attach type (enum bpf_attach_type).
pub const BPF_XDP: u32 = 37;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: test-run frames are really transmitted on redirect.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Largest `batch_size` the kernel accepts in live-frames mode (TEST_XDP_MAX_BATCH).
pub const TEST_XDP_MAX_BATCH: u32 = 256;
/// `XDP_FLAGS_SKB_MODE`: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `test` member of `union bpf_attr` (BPF_PROG_TEST_RUN).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _union: [u64; 4],
}

/// `struct xdp_md`, the XDP context passed as `ctx_in` to a test run.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct XdpMd {
    /// Offset of packet data (must be 0 in a test run).
    pub data: u32,
    /// Offset of the end of data (must equal the frame length).
    pub data_end: u32,
    /// Metadata offset (must be 0).
    pub data_meta: u32,
    /// The device the frame "arrived" on; must exist in the caller's netns.
    pub ingress_ifindex: u32,
    /// The rx queue (must be below the device's real rx queue count).
    pub rx_queue_index: u32,
    /// Must be 0.
    pub egress_ifindex: u32,
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b;
    }
    out
}

/// # Safety
/// `attr` must point to a correctly laid-out attr for `cmd`, and every pointer inside it must
/// be valid for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: forwarded to the caller's contract; size is the attr's true size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// Create a `BPF_MAP_TYPE_PERCPU_ARRAY` with u32 keys.
pub fn create_percpu_array(name: &str, value_size: u32, max_entries: u32) -> Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size,
        max_entries,
        map_name: name16(name),
        ..Default::default()
    };
    // SAFETY: attr has no pointers.
    let r = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.map_err(|source| Error::Bpf {
        cmd: "BPF_MAP_CREATE",
        source,
    })?;
    Ok(fd_from(r))
}

/// Look up `key` in a map; `value` must be exactly the map's value size (for per-CPU maps:
/// `round_up(value_size, 8) * possible_cpus`).
pub fn map_lookup(map: &OwnedFd, key: u32, value: &mut [u8]) -> Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value outlive the call; value is as large as the caller promises.
    unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }.map_err(|source| Error::Bpf {
        cmd: "BPF_MAP_LOOKUP_ELEM",
        source,
    })?;
    Ok(())
}

/// `BPF_PROG_TYPE_SCHED_CLS`: tc (and tcx) classifier programs.
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_TCX_INGRESS`: attach type of a tcx ingress link.
pub const BPF_TCX_INGRESS: u32 = 46;

/// Load an XDP program; on rejection the error carries the verifier log.
pub fn load_xdp_prog(name: &'static str, insns: &[Insn]) -> Result<OwnedFd> {
    // BPF_XDP lets the same program be attached through a BPF link.
    load_prog(name, BPF_PROG_TYPE_XDP, BPF_XDP, insns)
}

/// Load a program of any type; on rejection the error carries the verifier log.
pub fn load_prog(
    name: &'static str,
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
) -> Result<OwnedFd> {
    let license = CString::from(c"GPL");
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type,
        ..Default::default()
    };
    // SAFETY: insns, license and log all outlive the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(r) => Ok(fd_from(r)),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(Error::Verifier {
                prog: name,
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// One live-frames test run: the program runs `repeat` times on copies of `frame`, and each
/// `XDP_REDIRECT` transmits one. Must be called from the netns owning `ctx.ingress_ifindex`.
pub fn test_run_live(
    prog: &OwnedFd,
    frame: &[u8],
    ctx: &XdpMd,
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    // SAFETY: frame and ctx outlive the call; the kernel only reads them in live mode.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.map(|_| ())
}

/// Attach an XDP program to `ifindex` (in the caller's netns) through a BPF link; closing the
/// returned fd detaches it, so a crashed benchmark leaves nothing behind.
pub fn link_create_xdp(prog: &OwnedFd, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, BPF_XDP, xdp_flags)
}

/// Attach `prog` to `ifindex` with a BPF link of `attach_type`; closing the fd detaches it.
pub fn link_create(
    prog: &OwnedFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
        ..Default::default()
    };
    // SAFETY: attr has no pointers.
    let r = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?;
    Ok(fd_from(r))
}

/// Number of possible CPUs: the stride of per-CPU map values.
pub fn possible_cpus() -> Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| Error::io("read /sys/devices/system/cpu/possible", e))?;
    parse_cpu_list(s.trim()).map(|cpus| cpus.iter().max().map_or(0, |m| m + 1))
}

/// Parse a kernel CPU list such as "0-3,8,10-11".
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let bad = || Error::Invalid {
        what: "cpu list",
        detail: s.to_string(),
    };
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.parse().map_err(|_| bad())?;
                let b: usize = b.parse().map_err(|_| bad())?;
                if b < a {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// Pin the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(Error::Invalid {
                what: "cpu",
                detail: cpu.to_string(),
            });
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(Error::io(
                format!("sched_setaffinity(cpu {cpu})"),
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Make the calling thread SCHED_FIFO at `prio` (1..=99), so busy neighbours (compilers, other
/// tests) cannot take its CPU at every `cond_resched()` inside a long test run. The kernel's
/// RT throttling still leaves 5 % of the CPU to everyone else.
pub fn set_fifo(prio: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: param is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(Error::io(
            format!("sched_setscheduler(SCHED_FIFO, {prio})"),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The CPU the calling thread is running on right now.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn attr_layouts_match_linux_bpf_h() {
        // Offsets printed by a C program against <linux/bpf.h> (Linux 6.1 uapi).
        assert_eq!(offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(TestRunAttr, cpu), 68);
        assert_eq!(offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, prog_flags), 44);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(LinkCreateAttr, attach_type), 8);
        assert_eq!(offset_of!(LinkCreateAttr, flags), 12);
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, value), 16);
        assert_eq!(size_of::<XdpMd>(), 24);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8").unwrap(), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list("3").unwrap(), vec![3]);
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }

    #[test]
    fn names_are_truncated_and_nul_terminated() {
        let n = name16("a_very_long_program_name");
        assert_eq!(&n[..15], b"a_very_long_pro");
        assert_eq!(n[15], 0);
    }
}
