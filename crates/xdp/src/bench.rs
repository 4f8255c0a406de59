//! Forwarding benchmark: gen → dut → sink namespaces, each kind of dut in turn.
//!
//! ```text
//!  [gen ns]            [dut ns]                        [sink ns]
//!   gen_if  <-veth->  dut_in  ==(dut forwards)==> dut_out  <-veth->  sink_if
//!   Blaster            (kernel | bridge | ovs | external)            Sink (XDP count+drop)
//!   10.10.1.1          10.10.1.254     10.10.2.254                   10.10.2.2
//! ```
//!
//! Every dut gets a fresh topology (so one dut's leftovers, such as `ip_forward=1`, cannot
//! forward frames behind the next one's back). CPU placement: the Blaster thread is pinned to
//! `gen_cpu`; `dut_in`'s NAPI is switched to a kernel thread pinned to `dut_cpu`, so frames
//! are received on the dut's CPU, not the generator's; the sink's XDP program runs in the
//! softirq of whichever CPU transmits into it (the dut's), costing every dut the same.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::frame::{FlowSpec, build_flows};
use crate::netns::{NetnsGuard, fmt_mac, mac_of, run, run_in, veth_pair};
use crate::{Blaster, Error, Result, Sink};

/// Benchmark knobs. `Default` gives a ~20 s run per dut.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Unthrottled traffic before measuring (fills caches, lets bridges learn).
    pub warmup: Duration,
    /// Length of the saturation measurement.
    pub duration: Duration,
    /// Length of each step of the lossless-rate search.
    pub step: Duration,
    /// Number of search steps (0 disables the search).
    pub search_steps: usize,
    /// Loss below this fraction counts as lossless (0.001 = 0.1 %).
    pub loss_threshold: f64,
    /// CPU of the generator thread.
    pub gen_cpu: usize,
    /// CPU for the dut (its receive NAPI thread; external duts should pin themselves here).
    pub dut_cpu: usize,
    /// Service `dut_in`'s receive NAPI from a kernel thread pinned to `dut_cpu` (otherwise it
    /// runs in the generator's softirq, on the generator's CPU).
    pub threaded_napi: bool,
    /// UDP flows (distinct source ports).
    pub flows: u16,
    /// Frame length without FCS.
    pub frame_len: usize,
    /// Run Linux IP forwarding.
    pub kernel: bool,
    /// Run the Linux bridge.
    pub bridge: bool,
    /// Run Open vSwitch (userspace datapath) when installed.
    pub ovs: bool,
    /// How the sink counts what the dut delivers.
    pub sink: SinkKind,
}

/// The sink's counting program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// tcx ingress: costs every dut the same per frame (the default).
    Tc,
    /// Native XDP: cheapest, but veth then copies every skb lacking 256 bytes of
    /// headroom into page-pool memory first, which only socket-sent frames (AF_PACKET
    /// and OVS duts) lack; kernel-forwarded frames come from XDP memory already.
    Xdp,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            step: Duration::from_secs(2),
            search_steps: 5,
            loss_threshold: 0.001,
            gen_cpu: 0,
            dut_cpu: 1,
            threaded_napi: true,
            flows: 4,
            frame_len: crate::frame::MIN_FRAME_LEN,
            kernel: true,
            bridge: true,
            ovs: true,
            sink: SinkKind::Tc,
        }
    }
}

/// What a dut needs to know about the topology it runs in.
#[derive(Clone, Debug)]
pub struct BenchTopo {
    /// Generator namespace.
    pub gen_ns: String,
    /// Namespace the dut must run in (e.g. `ip netns exec <dut_ns> ...`).
    pub dut_ns: String,
    /// Sink namespace.
    pub sink_ns: String,
    /// Generator interface (in `gen_ns`).
    pub gen_if: String,
    /// Dut interface facing the generator; traffic arrives here.
    pub dut_in: String,
    /// Dut interface facing the sink; traffic must leave here.
    pub dut_out: String,
    /// Sink interface (in `sink_ns`).
    pub sink_if: String,
    /// MAC of `gen_if` (source MAC of the offered frames).
    pub gen_mac: [u8; 6],
    /// MAC of `dut_in` (destination MAC of the offered frames, except for the bridge).
    pub dut_in_mac: [u8; 6],
    /// MAC of `dut_out` (source MAC a router should put on forwarded frames).
    pub dut_out_mac: [u8; 6],
    /// MAC of `sink_if` (destination MAC the dut must put on forwarded frames).
    pub sink_mac: [u8; 6],
    /// Generator address (frames' source IP).
    pub gen_ip: Ipv4Addr,
    /// Address for `dut_in` (10.10.1.254/24), assigned only for the kernel dut.
    pub dut_in_ip: Ipv4Addr,
    /// Address for `dut_out` (10.10.2.254/24), assigned only for the kernel dut.
    pub dut_out_ip: Ipv4Addr,
    /// Sink address (frames' destination IP).
    pub sink_ip: Ipv4Addr,
    /// CPU the generator is pinned to: keep the dut off it.
    pub gen_cpu: usize,
    /// CPU reserved for the dut: pin external duts here (`taskset -c <dut_cpu>`).
    pub dut_cpu: usize,
}

/// A device under test started by the caller's closure inside `BenchTopo::dut_ns`.
pub struct DutSpec {
    /// Row name in the results.
    pub name: String,
    /// Start the dut; the returned child is killed (SIGTERM, then SIGKILL) after the run.
    #[allow(clippy::type_complexity)]
    pub start: Box<dyn Fn(&BenchTopo) -> Result<Child>>,
}

/// One dut's numbers. Rates are in Mpps of frames of `BenchConfig::frame_len`.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// Dut name ("kernel", "bridge", "ovs", or the caller's).
    pub dut: String,
    /// Generator rate during the saturation run.
    pub offered_mpps: f64,
    /// Rate counted by the sink during the saturation run.
    pub delivered_mpps: f64,
    /// Loss during the saturation run, percent.
    pub drop_pct: f64,
    /// Highest offered rate found with loss below the threshold (None: none found/searched).
    pub best_lossless_mpps: Option<f64>,
    /// Why the dut was not measured, if it was not.
    pub skipped: Option<String>,
    /// Where each piece ran.
    pub placement: String,
}

impl BenchResult {
    fn skipped(dut: &str, reason: String) -> BenchResult {
        BenchResult {
            dut: dut.to_string(),
            offered_mpps: 0.0,
            delivered_mpps: 0.0,
            drop_pct: 0.0,
            best_lossless_mpps: None,
            skipped: Some(reason),
            placement: String::new(),
        }
    }
}

/// A started process killed on drop; only ever PIDs this module spawned.
struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(Error::Dut {
                dut: self.name.clone(),
                detail: format!("process exited early: {st}"),
            }),
            Err(e) => Err(Error::io(format!("wait for {}", self.name), e)),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: pid is our own child that has not been reaped (try_wait said None).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes a temp dir on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three namespaces and veths; deleting the namespaces (on drop) removes everything.
struct Topo {
    info: BenchTopo,
    // Dropped in order: sink before dut before gen does not matter, all are independent.
    _ns: Vec<NetnsGuard>,
}

static TOPO_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Topo {
    fn build(cfg: &BenchConfig) -> Result<Topo> {
        let pid = std::process::id() % 100_000;
        let k = TOPO_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        let ns = |r: &str| format!("sbb-{pid}-{k}-{r}");
        // <= 9 chars so "napi/<if>-" fits a 15-char kernel thread name.
        let ifn = |r: &str| format!("b{pid:05}{}{r}", k % 10);
        let gen_ns = NetnsGuard::create(&ns("gen"))?;
        let dut_ns = NetnsGuard::create(&ns("dut"))?;
        let sink_ns = NetnsGuard::create(&ns("sink"))?;
        let (gen_if, dut_in, dut_out, sink_if) = (ifn("g"), ifn("i"), ifn("o"), ifn("s"));
        veth_pair(&gen_if, gen_ns.name(), &dut_in, dut_ns.name())?;
        veth_pair(&dut_out, dut_ns.name(), &sink_if, sink_ns.name())?;
        let info = BenchTopo {
            gen_mac: mac_of(gen_ns.name(), &gen_if)?,
            dut_in_mac: mac_of(dut_ns.name(), &dut_in)?,
            dut_out_mac: mac_of(dut_ns.name(), &dut_out)?,
            sink_mac: mac_of(sink_ns.name(), &sink_if)?,
            gen_ns: gen_ns.name().to_string(),
            dut_ns: dut_ns.name().to_string(),
            sink_ns: sink_ns.name().to_string(),
            gen_if,
            dut_in,
            dut_out,
            sink_if,
            gen_ip: Ipv4Addr::new(10, 10, 1, 1),
            dut_in_ip: Ipv4Addr::new(10, 10, 1, 254),
            dut_out_ip: Ipv4Addr::new(10, 10, 2, 254),
            sink_ip: Ipv4Addr::new(10, 10, 2, 2),
            gen_cpu: cfg.gen_cpu,
            dut_cpu: cfg.dut_cpu,
        };
        let t = &info;
        run_in(
            &t.gen_ns,
            "ip",
            &["addr", "add", "10.10.1.1/24", "dev", &t.gen_if],
        )?;
        run_in(
            &t.sink_ns,
            "ip",
            &["addr", "add", "10.10.2.2/24", "dev", &t.sink_if],
        )?;
        // Static neighbours: nobody needs ARP.
        run_in(
            &t.gen_ns,
            "ip",
            &[
                "neigh",
                "replace",
                "10.10.1.254",
                "lladdr",
                &fmt_mac(&t.dut_in_mac),
                "dev",
                &t.gen_if,
                "nud",
                "permanent",
            ],
        )?;
        run_in(
            &t.sink_ns,
            "ip",
            &[
                "neigh",
                "replace",
                "10.10.2.254",
                "lladdr",
                &fmt_mac(&t.dut_out_mac),
                "dev",
                &t.sink_if,
                "nud",
                "permanent",
            ],
        )?;
        Ok(Topo {
            info,
            _ns: vec![sink_ns, dut_ns, gen_ns],
        })
    }

    /// Give `dut_in` a NAPI instance (GRO on) serviced by a kernel thread on `dut_cpu`.
    fn thread_napi(&self, ns: &str, iface: &str, cpu: usize, threaded: bool) -> String {
        let _ = run_in(ns, "ethtool", &["-K", iface, "gro", "on"]);
        if !threaded {
            return format!("{iface} NAPI in the sender's softirq");
        }
        if let Err(e) = run_in(
            ns,
            "sh",
            &["-c", &format!("echo 1 > /sys/class/net/{iface}/threaded")],
        ) {
            return format!("{iface} NAPI not threaded ({e})");
        }
        match pin_napi_threads(iface, cpu) {
            Ok(0) => format!("{iface} NAPI thread not found"),
            Ok(n) => format!("{iface} NAPI thread(s) x{n} on cpu{cpu}"),
            Err(e) => format!("{iface} NAPI pin failed ({e})"),
        }
    }
}

/// Pin the kernel threads named "napi/<iface>-*" to `cpu`; returns how many.
fn pin_napi_threads(iface: &str, cpu: usize) -> Result<usize> {
    let prefix = format!("napi/{iface}-");
    let prefix = &prefix[..prefix.len().min(15)];
    let mut n = 0;
    let rd = std::fs::read_dir("/proc").map_err(|e| Error::io("read /proc", e))?;
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(ent.path().join("comm")) else {
            continue;
        };
        if comm.trim_end().starts_with(prefix) {
            // SAFETY: cpu_set_t is plain data; pid is a kernel thread we only re-pin.
            let ok = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
            };
            if ok {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// One measurement: offered and delivered rates over `dur`.
#[derive(Clone, Copy, Debug)]
struct Sample {
    offered_pps: f64,
    delivered_pps: f64,
    loss: f64,
}

fn measure(blaster: &Blaster, sink: &Sink, dur: Duration, rate: Option<u64>) -> Result<Sample> {
    let before = sink.count()?;
    let st = blaster.run_for(dur, rate, &AtomicBool::new(false))?;
    // Let rings and NAPI drain before reading.
    std::thread::sleep(Duration::from_millis(100));
    let got = sink.count()?.saturating_sub(before);
    let secs = st.elapsed.as_secs_f64().max(1e-9);
    Ok(Sample {
        offered_pps: st.sent as f64 / secs,
        delivered_pps: got as f64 / secs,
        loss: if st.sent == 0 {
            0.0
        } else {
            1.0 - (got.min(st.sent) as f64 / st.sent as f64)
        },
    })
}

/// Blast small bursts until the sink sees some: the dut is up (or `timeout` says it isn't).
fn wait_forwarding(blaster: &Blaster, sink: &Sink, timeout: Duration) -> Result<bool> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        let before = sink.count()?;
        blaster.run(1000, Some(100_000), &AtomicBool::new(false))?;
        std::thread::sleep(Duration::from_millis(50));
        if sink.count()? > before {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(false)
}

fn mpps(pps: f64) -> f64 {
    pps / 1e6
}

/// Saturation run plus a bisection for the highest lossless rate.
fn run_one(
    name: &str,
    cfg: &BenchConfig,
    topo: &Topo,
    dst_mac: [u8; 6],
    placement: String,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<BenchResult> {
    let t = &topo.info;
    let sink = match cfg.sink {
        SinkKind::Tc => Sink::attach_tc(&t.sink_ns, &t.sink_if)?,
        SinkKind::Xdp => Sink::attach(&t.sink_ns, &t.sink_if)?,
    };
    let flow = FlowSpec {
        frame_len: cfg.frame_len,
        ..FlowSpec::new(t.gen_mac, dst_mac, t.gen_ip, t.sink_ip)
    };
    let blaster = Blaster::with_frames(&t.gen_ns, &t.gen_if, build_flows(&flow, cfg.flows)?)?
        .pin_cpu(cfg.gen_cpu)
        .realtime(true);
    if !wait_forwarding(&blaster, &sink, Duration::from_secs(10))? {
        alive()?;
        return Ok(BenchResult::skipped(
            name,
            "no frame reached the sink within 10 s".into(),
        ));
    }
    let placement = format!(
        "gen cpu{} (pinned); {placement}; sink {} in softirq of the transmitting cpu",
        cfg.gen_cpu,
        sink.mode()
    );
    eprintln!("[bench] {name}: warm-up {:?}", cfg.warmup);
    measure(&blaster, &sink, cfg.warmup, None)?;
    alive()?;
    let sat = measure(&blaster, &sink, cfg.duration, None)?;
    alive()?;
    eprintln!(
        "[bench] {name}: saturation: offered {:.3} Mpps, delivered {:.3} Mpps, loss {:.2} %",
        mpps(sat.offered_pps),
        mpps(sat.delivered_pps),
        sat.loss * 100.0
    );
    let mut best: Option<f64> = None;
    if sat.loss < cfg.loss_threshold {
        best = Some(sat.offered_pps);
    } else if cfg.search_steps > 0 {
        let (mut lo, mut hi) = (0.0f64, sat.offered_pps);
        let mut rate = sat.delivered_pps * 0.98;
        for i in 0..cfg.search_steps {
            let r = rate.max(1000.0) as u64;
            let s = measure(&blaster, &sink, cfg.step, Some(r))?;
            alive()?;
            let ok = s.loss < cfg.loss_threshold;
            eprintln!(
                "[bench] {name}: step {}/{}: target {:.3} Mpps, offered {:.3}, delivered {:.3}, \
                 loss {:.3} % {}",
                i + 1,
                cfg.search_steps,
                mpps(r as f64),
                mpps(s.offered_pps),
                mpps(s.delivered_pps),
                s.loss * 100.0,
                if ok { "ok" } else { "lossy" }
            );
            if ok {
                best = Some(best.map_or(s.offered_pps, |b| b.max(s.offered_pps)));
                lo = r as f64;
            } else {
                hi = r as f64;
            }
            rate = (lo + hi) / 2.0;
        }
    }
    Ok(BenchResult {
        dut: name.to_string(),
        offered_mpps: mpps(sat.offered_pps),
        delivered_mpps: mpps(sat.delivered_pps),
        drop_pct: sat.loss * 100.0,
        best_lossless_mpps: best.map(mpps),
        skipped: None,
        placement,
    })
}

fn bench_kernel(cfg: &BenchConfig) -> Result<BenchResult> {
    let topo = Topo::build(cfg)?;
    let t = &topo.info;
    run_in(
        &t.dut_ns,
        "ip",
        &["addr", "add", "10.10.1.254/24", "dev", &t.dut_in],
    )?;
    run_in(
        &t.dut_ns,
        "ip",
        &["addr", "add", "10.10.2.254/24", "dev", &t.dut_out],
    )?;
    run_in(
        &t.dut_ns,
        "ip",
        &[
            "neigh",
            "replace",
            "10.10.2.2",
            "lladdr",
            &fmt_mac(&t.sink_mac),
            "dev",
            &t.dut_out,
            "nud",
            "permanent",
        ],
    )?;
    run_in(&t.dut_ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    let napi = topo.thread_napi(&t.dut_ns, &t.dut_in, cfg.dut_cpu, cfg.threaded_napi);
    let p = format!("kernel forwarding in {napi}");
    run_one("kernel", cfg, &topo, t.dut_in_mac, p, &mut || Ok(()))
}

fn bench_bridge(cfg: &BenchConfig) -> Result<BenchResult> {
    let topo = Topo::build(cfg)?;
    let t = &topo.info;
    let d = &t.dut_ns;
    run_in(d, "ip", &["link", "add", "br0", "type", "bridge"])?;
    run_in(d, "ip", &["link", "set", &t.dut_in, "master", "br0"])?;
    run_in(d, "ip", &["link", "set", &t.dut_out, "master", "br0"])?;
    run_in(d, "ip", &["link", "set", "br0", "up"])?;
    run_in(
        d,
        "bridge",
        &[
            "fdb",
            "replace",
            &fmt_mac(&t.sink_mac),
            "dev",
            &t.dut_out,
            "master",
            "static",
        ],
    )?;
    let napi = topo.thread_napi(d, &t.dut_in, cfg.dut_cpu, cfg.threaded_napi);
    let p = format!("bridging in {napi}");
    run_one("bridge", cfg, &topo, t.sink_mac, p, &mut || Ok(()))
}

fn bench_external(cfg: &BenchConfig, spec: &DutSpec) -> Result<BenchResult> {
    let topo = Topo::build(cfg)?;
    let t = &topo.info;
    let napi = topo.thread_napi(&t.dut_ns, &t.dut_in, cfg.dut_cpu, cfg.threaded_napi);
    let child = (spec.start)(t).map_err(|e| Error::Dut {
        dut: spec.name.clone(),
        detail: format!("start failed: {e}"),
    })?;
    let mut guard = ChildGuard {
        name: spec.name.clone(),
        child,
    };
    let p = format!(
        "{} pid {} (caller-placed, dut cpu{}); {napi}",
        spec.name,
        guard.child.id(),
        cfg.dut_cpu
    );
    let r = run_one(&spec.name, cfg, &topo, t.dut_in_mac, p, &mut || {
        guard.check_alive()
    });
    drop(guard);
    r
}

fn which(prog: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(prog))
    .find(|p| p.exists())
}

fn bench_ovs(cfg: &BenchConfig) -> Result<BenchResult> {
    let (Some(vswitchd), Some(ovsdb)) = (which("ovs-vswitchd"), which("ovsdb-server")) else {
        return Ok(BenchResult::skipped(
            "ovs",
            "ovs-vswitchd/ovsdb-server not installed".into(),
        ));
    };
    let schema = Path::new("/usr/share/openvswitch/vswitch.ovsschema");
    if !schema.exists() {
        return Ok(BenchResult::skipped(
            "ovs",
            "vswitch.ovsschema not found".into(),
        ));
    }
    let topo = Topo::build(cfg)?;
    let t = &topo.info;
    let dir = TempDir(std::env::temp_dir().join(format!(
        "sbb-ovs-{}-{}",
        std::process::id(),
        TOPO_SEQ.load(std::sync::atomic::Ordering::Relaxed)
    )));
    std::fs::create_dir_all(&dir.0).map_err(|e| Error::io("create ovs temp dir", e))?;
    let p = |f: &str| dir.0.join(f).to_string_lossy().into_owned();
    let db = p("conf.db");
    run("ovsdb-tool", &["create", &db, &schema.to_string_lossy()])?;
    let cpu = cfg.dut_cpu.to_string();
    let spawn = |name: &str, args: Vec<String>| -> Result<ChildGuard> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &t.dut_ns, "taskset", "-c", &cpu])
            .args(&args)
            .env("OVS_RUNDIR", &dir.0)
            .env("OVS_LOGDIR", &dir.0)
            .env("OVS_DBDIR", &dir.0)
            .env("OVS_SYSCONFDIR", &dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().map_err(|e| Error::Command {
            cmd: format!("{name} {}", args.join(" ")),
            detail: e.to_string(),
        })?;
        Ok(ChildGuard {
            name: name.to_string(),
            child,
        })
    };
    let sock = p("db.sock");
    let mut dbg = spawn(
        "ovsdb-server",
        vec![
            ovsdb.to_string_lossy().into_owned(),
            db.clone(),
            format!("--remote=punix:{sock}"),
            format!("--unixctl={}", p("ovsdb.ctl")),
            format!("--log-file={}", p("ovsdb.log")),
            format!("--pidfile={}", p("ovsdb.pid")),
        ],
    )?;
    let t0 = Instant::now();
    while !Path::new(&sock).exists() {
        if t0.elapsed() > Duration::from_secs(5) || dbg.check_alive().is_err() {
            return Ok(BenchResult::skipped(
                "ovs",
                format!("ovsdb-server did not start (log: {})", p("ovsdb.log")),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dbarg = format!("--db=unix:{sock}");
    let vsctl = |args: &[&str]| {
        let mut full = vec![dbarg.as_str(), "--timeout=15"];
        full.extend_from_slice(args);
        run("ovs-vsctl", &full)
    };
    vsctl(&["--no-wait", "init"])?;
    let mut vsd = spawn(
        "ovs-vswitchd",
        vec![
            vswitchd.to_string_lossy().into_owned(),
            format!("unix:{sock}"),
            format!("--unixctl={}", p("vswitchd.ctl")),
            format!("--log-file={}", p("vswitchd.log")),
            format!("--pidfile={}", p("vswitchd.pid")),
        ],
    )?;
    let setup = vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
        "--",
        "add-port",
        "br0",
        &t.dut_in,
        "--",
        "set",
        "Interface",
        &t.dut_in,
        "ofport_request=1",
        "--",
        "add-port",
        "br0",
        &t.dut_out,
        "--",
        "set",
        "Interface",
        &t.dut_out,
        "ofport_request=2",
    ])
    .and_then(|_| {
        let mgmt = format!("unix:{}", p("br0.mgmt"));
        run("ovs-ofctl", &["del-flows", &mgmt])?;
        run(
            "ovs-ofctl",
            &[
                "add-flow",
                &mgmt,
                &format!(
                    "in_port=1,actions=mod_dl_dst:{},output:2",
                    fmt_mac(&t.sink_mac)
                ),
            ],
        )
    });
    if let Err(e) = setup {
        let log = std::fs::read_to_string(p("vswitchd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return Ok(BenchResult::skipped(
            "ovs",
            format!("setup failed: {e}; vswitchd log tail: {}", tail.join(" | ")),
        ));
    }
    let napi = topo.thread_napi(&t.dut_ns, &t.dut_in, cfg.dut_cpu, cfg.threaded_napi);
    let place = format!(
        "ovs-vswitchd (netdev datapath) pid {} on cpu{}; {napi}",
        vsd.child.id(),
        cfg.dut_cpu
    );
    let r = run_one("ovs", cfg, &topo, t.dut_in_mac, place, &mut || {
        dbg.check_alive()?;
        vsd.check_alive()
    });
    drop(vsd);
    drop(dbg);
    r
}

/// Run every enabled built-in dut, then `externals`, each on a fresh topology. A dut that
/// fails yields a skipped row with the reason; only setup errors common to all abort.
pub fn run_bench(cfg: &BenchConfig, externals: &[DutSpec]) -> Result<Vec<BenchResult>> {
    if !crate::netns::is_root() {
        return Err(Error::Invalid {
            what: "privileges",
            detail: "the forwarding benchmark needs root".into(),
        });
    }
    let mut out = Vec::new();
    let mut record = |name: &str, r: Result<BenchResult>| {
        let r = r.unwrap_or_else(|e| BenchResult::skipped(name, e.to_string()));
        if let Some(why) = &r.skipped {
            eprintln!("[bench] {name}: skipped: {why}");
        }
        out.push(r);
    };
    if cfg.kernel {
        record("kernel", bench_kernel(cfg));
    }
    if cfg.bridge {
        record("bridge", bench_bridge(cfg));
    }
    if cfg.ovs {
        record("ovs", bench_ovs(cfg));
    }
    for spec in externals {
        record(&spec.name, bench_external(cfg, spec));
    }
    Ok(out)
}

/// Measure the generator alone: gen → sink over one veth, the sink's NAPI on `dut_cpu`.
/// The result's `offered_mpps` is the Blaster's ceiling on this machine.
pub fn generator_ceiling(cfg: &BenchConfig) -> Result<BenchResult> {
    let pid = std::process::id() % 100_000;
    let k = TOPO_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
    let gen_ns = NetnsGuard::create(&format!("sbb-{pid}-{k}-g"))?;
    let sink_ns = NetnsGuard::create(&format!("sbb-{pid}-{k}-s"))?;
    let (gi, si) = (format!("b{pid:05}{k}G"), format!("b{pid:05}{k}S"));
    veth_pair(&gi, gen_ns.name(), &si, sink_ns.name())?;
    let sink = Sink::attach(sink_ns.name(), &si)?;
    let _ = run(
        "ip",
        &[
            "netns",
            "exec",
            sink_ns.name(),
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{si}/threaded"),
        ],
    );
    let pinned = pin_napi_threads(&si, cfg.dut_cpu)?;
    let flow = FlowSpec {
        frame_len: cfg.frame_len,
        ..FlowSpec::new(
            mac_of(gen_ns.name(), &gi)?,
            mac_of(sink_ns.name(), &si)?,
            Ipv4Addr::new(10, 10, 1, 1),
            Ipv4Addr::new(10, 10, 1, 2),
        )
    };
    let blaster = Blaster::with_frames(gen_ns.name(), &gi, build_flows(&flow, cfg.flows)?)?
        .pin_cpu(cfg.gen_cpu)
        .realtime(true);
    measure(&blaster, &sink, cfg.warmup, None)?;
    let s = measure(&blaster, &sink, cfg.duration, None)?;
    eprintln!(
        "[bench] generator: offered {:.3} Mpps, sink (XDP_DROP) counted {:.3} Mpps",
        mpps(s.offered_pps),
        mpps(s.delivered_pps)
    );
    Ok(BenchResult {
        dut: "none (gen→sink)".into(),
        offered_mpps: mpps(s.offered_pps),
        delivered_mpps: mpps(s.delivered_pps),
        drop_pct: s.loss * 100.0,
        best_lossless_mpps: None,
        skipped: None,
        placement: format!(
            "gen cpu{}; sink XDP ({}) NAPI thread x{pinned} on cpu{}",
            cfg.gen_cpu,
            sink.mode(),
            cfg.dut_cpu
        ),
    })
}

/// A text table of the results with each dut's delivered rate relative to `kernel`.
pub fn render_table(results: &[BenchResult]) -> String {
    let base = results
        .iter()
        .find(|r| r.dut == "kernel" && r.skipped.is_none())
        .map(|r| r.delivered_mpps)
        .filter(|&d| d > 0.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>12} {:>14} {:>8} {:>14} {:>10}",
        "dut", "offered Mpps", "delivered Mpps", "drop %", "lossless Mpps", "vs kernel"
    );
    for r in results {
        if let Some(why) = &r.skipped {
            let _ = writeln!(s, "{:<16} skipped: {why}", r.dut);
            continue;
        }
        let ratio = base.map_or("-".to_string(), |b| format!("{:.2}x", r.delivered_mpps / b));
        let lossless = r
            .best_lossless_mpps
            .map_or("-".to_string(), |m| format!("{m:.3}"));
        let _ = writeln!(
            s,
            "{:<16} {:>12.3} {:>14.3} {:>8.2} {:>14} {:>10}",
            r.dut, r.offered_mpps, r.delivered_mpps, r.drop_pct, lossless, ratio
        );
    }
    for r in results.iter().filter(|r| r.skipped.is_none()) {
        let _ = writeln!(s, "  {}: {}", r.dut, r.placement);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dut: &str, delivered: f64) -> BenchResult {
        BenchResult {
            dut: dut.into(),
            offered_mpps: 2.0,
            delivered_mpps: delivered,
            drop_pct: 10.0,
            best_lossless_mpps: Some(0.5),
            skipped: None,
            placement: "p".into(),
        }
    }

    #[test]
    fn table_has_ratio_to_kernel() {
        let t = render_table(&[
            row("kernel", 1.0),
            row("bridge", 1.5),
            BenchResult::skipped("ovs", "not installed".into()),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("kernel") && lines[1].ends_with("1.00x"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("bridge") && lines[2].ends_with("1.50x"),
            "{t}"
        );
        assert!(lines[3].contains("skipped: not installed"), "{t}");
    }

    #[test]
    fn table_without_kernel_has_no_ratio() {
        let t = render_table(&[row("bridge", 1.5)]);
        assert!(t.lines().nth(1).unwrap().trim_end().ends_with('-'), "{t}");
    }
}
