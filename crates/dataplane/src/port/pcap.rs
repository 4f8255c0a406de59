//! pcap-file ports: replay a capture as received frames, record transmitted frames.
//!
//! A pcap port makes a pipeline run deterministic: the same input file gives
//! the same output file, byte for byte, so golden tests compare files.
//!
//! Output timestamps are **a counter, not the clock**: the n-th frame written
//! (counting from 0) gets timestamp `n` microseconds after the epoch. Input
//! timestamps are not carried through the pipeline ([`PacketBuf`] has no
//! timestamp), so copying them is not possible; a counter keeps files
//! reproducible and keeps the order visible in Wireshark. Files are written
//! little-endian, microsecond resolution, snaplen 65535, link type Ethernet,
//! whatever the host.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packet::{MAX_FRAME, PacketBuf, Pool};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use super::{Port, PortError, PortStats, TxOutcome};

const BACKEND: &str = "pcap";
/// Snaplen written in output headers; every frame we hold ([`MAX_FRAME`]) fits.
const OUT_SNAPLEN: u32 = 65535;

fn io_err(port: u16, path: &Path, op: &'static str, source: std::io::Error) -> PortError {
    PortError::Io {
        port,
        backend: BACKEND,
        target: path.display().to_string(),
        op,
        source,
    }
}

fn pcap_err(port: u16, path: &Path, op: &'static str, e: PcapError) -> PortError {
    let source = match e {
        PcapError::IoError(io) => io,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    };
    io_err(port, path, op, source)
}

/// Reads frames from a classic pcap file (Ethernet link type) and gives them as rx.
pub struct PcapInPort {
    id: u16,
    path: PathBuf,
    target: String,
    reader: PcapReader<BufReader<File>>,
    exhausted: bool,
    /// Frames skipped: captured shorter than on the wire, or longer than [`MAX_FRAME`].
    rx_errors: u64,
}

impl PcapInPort {
    /// Open `path` for replay. Fails (naming the file) when it cannot be opened,
    /// is not a pcap file, or is not an Ethernet capture.
    pub fn open(id: u16, path: impl AsRef<Path>) -> Result<PcapInPort, PortError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| io_err(id, &path, "open", e))?;
        let reader = PcapReader::new(BufReader::with_capacity(1 << 16, file))
            .map_err(|e| pcap_err(id, &path, "read pcap header", e))?;
        let header = reader.header();
        if header.datalink != DataLink::ETHERNET {
            return Err(PortError::Config {
                port: id,
                message: format!(
                    "pcap file '{}' has link type {:?}, only Ethernet is supported",
                    path.display(),
                    header.datalink
                ),
            });
        }
        Ok(PcapInPort {
            id,
            target: path.display().to_string(),
            path,
            reader,
            exhausted: false,
            rx_errors: 0,
        })
    }
}

impl Port for PcapInPort {
    fn id(&self) -> u16 {
        self.id
    }
    fn backend(&self) -> &'static str {
        BACKEND
    }
    fn target(&self) -> &str {
        &self.target
    }
    /// Reads up to `max` frames. A corrupt or cut-off file ends the input:
    /// the port becomes exhausted and the error (naming the file) is returned once.
    fn rx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
        max: usize,
    ) -> Result<usize, PortError> {
        let mut n = 0;
        while n < max && !self.exhausted {
            let pkt = match self.reader.next_packet() {
                None => {
                    self.exhausted = true;
                    break;
                }
                Some(Err(e)) => {
                    self.exhausted = true;
                    return Err(pcap_err(self.id, &self.path, "read packet", e));
                }
                Some(Ok(p)) => p,
            };
            // A frame cut short by the capture's snaplen is not the frame that was on the wire.
            if (pkt.orig_len as usize) > pkt.data.len() || pkt.data.len() > MAX_FRAME {
                self.rx_errors += 1;
                continue;
            }
            let mut b = pool.get();
            if b.set_frame(&pkt.data) {
                b.in_port = self.id;
                batch.push(b);
                n += 1;
            } else {
                self.rx_errors += 1;
                pool.put(b);
            }
        }
        Ok(n)
    }
    /// An input-only port has no wire to send on: every frame is dropped and counted.
    fn tx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
    ) -> Result<TxOutcome, PortError> {
        let dropped = batch.len();
        pool.put_all(batch);
        Ok(TxOutcome {
            dropped,
            ..TxOutcome::default()
        })
    }
    fn rx_exhausted(&self) -> bool {
        self.exhausted
    }
    fn stats(&self) -> PortStats {
        PortStats {
            rx_errors: self.rx_errors,
            tx_errors: 0,
        }
    }
}

/// The file behind a [`PcapWriter`], shared so the port can flush it:
/// `PcapWriter` gives no access to its inner writer. Only the port uses it,
/// so the lock is never contended.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl SharedFile {
    fn lock(&self) -> std::sync::MutexGuard<'_, BufWriter<File>> {
        // Poisoning only means a panic elsewhere while writing; the writer is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.lock().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.lock().flush()
    }
}

/// Writes every transmitted frame to a pcap file (see the module doc for timestamps).
pub struct PcapOutPort {
    id: u16,
    path: PathBuf,
    target: String,
    writer: PcapWriter<SharedFile>,
    file: SharedFile,
    /// Frames written so far; also the next frame's timestamp in microseconds.
    written: u64,
    tx_errors: u64,
}

impl PcapOutPort {
    /// Create (or truncate) `path` and write the pcap header.
    pub fn create(id: u16, path: impl AsRef<Path>) -> Result<PcapOutPort, PortError> {
        let path = path.as_ref().to_path_buf();
        let f = File::create(&path).map_err(|e| io_err(id, &path, "create", e))?;
        let file = SharedFile(Arc::new(Mutex::new(BufWriter::with_capacity(1 << 16, f))));
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: OUT_SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
        };
        let writer = PcapWriter::with_header(file.clone(), header)
            .map_err(|e| pcap_err(id, &path, "write pcap header", e))?;
        Ok(PcapOutPort {
            id,
            target: path.display().to_string(),
            path,
            writer,
            file,
            written: 0,
            tx_errors: 0,
        })
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Port for PcapOutPort {
    fn id(&self) -> u16 {
        self.id
    }
    fn backend(&self) -> &'static str {
        BACKEND
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn rx_batch(
        &mut self,
        _pool: &mut Pool,
        _batch: &mut Vec<PacketBuf>,
        _max: usize,
    ) -> Result<usize, PortError> {
        Ok(0)
    }
    /// Appends every frame. A write failure (disk full) is returned after the
    /// whole batch has been given back to the pool; the failed frames are counted.
    fn tx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
    ) -> Result<TxOutcome, PortError> {
        let mut out = TxOutcome::default();
        let mut first_err = None;
        for b in batch.drain(..) {
            let frame = b.frame();
            let len = frame.len();
            let pkt = PcapPacket::new(
                Duration::from_micros(self.written),
                frame.len() as u32,
                frame,
            );
            match self.writer.write_packet(&pkt) {
                Ok(_) => {
                    self.written += 1;
                    out.sent += 1;
                    out.bytes += len;
                }
                Err(e) => {
                    self.tx_errors += 1;
                    out.dropped += 1;
                    if first_err.is_none() {
                        first_err = Some(pcap_err(self.id, &self.path, "write packet", e));
                    }
                }
            }
            pool.put(b);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
    /// An output-only port is not a source: it never gives frames.
    fn rx_exhausted(&self) -> bool {
        true
    }
    fn flush(&mut self) -> Result<(), PortError> {
        self.file
            .flush()
            .map_err(|e| io_err(self.id, &self.path, "flush", e))
    }
    fn stats(&self) -> PortStats {
        PortStats {
            rx_errors: 0,
            tx_errors: self.tx_errors,
        }
    }
}

impl Drop for PcapOutPort {
    fn drop(&mut self) {
        if let Err(e) = self.file.flush() {
            tracing::warn!(port = self.id, file = %self.path.display(), error = %e, "pcap flush at close failed");
        }
    }
}

/// A pcap port with an optional input file and an optional output file, so one
/// switch port can both replay a capture and record what it sends.
pub struct PcapPort {
    id: u16,
    target: String,
    input: Option<PcapInPort>,
    output: Option<PcapOutPort>,
}

impl PcapPort {
    /// A port reading `input` (if any) and writing `output` (if any).
    /// At least one must be given.
    pub fn open(
        id: u16,
        input: Option<&Path>,
        output: Option<&Path>,
    ) -> Result<PcapPort, PortError> {
        let input = input.map(|p| PcapInPort::open(id, p)).transpose()?;
        let output = output.map(|p| PcapOutPort::create(id, p)).transpose()?;
        let target = match (&input, &output) {
            (Some(i), Some(o)) => format!("{} -> {}", i.target, o.target),
            (Some(i), None) => i.target.clone(),
            (None, Some(o)) => o.target.clone(),
            (None, None) => {
                return Err(PortError::Config {
                    port: id,
                    message: "a pcap port needs an input file, an output file or both".into(),
                });
            }
        };
        Ok(PcapPort {
            id,
            target,
            input,
            output,
        })
    }
}

impl Port for PcapPort {
    fn id(&self) -> u16 {
        self.id
    }
    fn backend(&self) -> &'static str {
        BACKEND
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn rx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
        max: usize,
    ) -> Result<usize, PortError> {
        match &mut self.input {
            Some(i) => i.rx_batch(pool, batch, max),
            None => Ok(0),
        }
    }
    fn tx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
    ) -> Result<TxOutcome, PortError> {
        match &mut self.output {
            Some(o) => o.tx_batch(pool, batch),
            None => {
                let dropped = batch.len();
                pool.put_all(batch);
                Ok(TxOutcome {
                    dropped,
                    ..TxOutcome::default()
                })
            }
        }
    }
    /// True when the input is at its end, or there is no input at all.
    fn rx_exhausted(&self) -> bool {
        self.input.as_ref().is_none_or(|i| i.rx_exhausted())
    }
    fn flush(&mut self) -> Result<(), PortError> {
        match &mut self.output {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
    fn stats(&self) -> PortStats {
        PortStats {
            rx_errors: self.input.as_ref().map_or(0, |i| i.rx_errors),
            tx_errors: self.output.as_ref().map_or(0, |o| o.tx_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sb-pcap-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn frames() -> Vec<Vec<u8>> {
        (0..50u32)
            .map(|i| {
                let len = 60 + (i as usize * 37) % 1400;
                (0..len).map(|j| (j as u32 ^ i) as u8).collect()
            })
            .collect()
    }

    fn send_all(port: &mut dyn Port, pool: &mut Pool, fs: &[Vec<u8>]) {
        for chunk in fs.chunks(7) {
            let mut batch: Vec<PacketBuf> = chunk
                .iter()
                .map(|f| {
                    let mut b = pool.get();
                    assert!(b.set_frame(f));
                    b
                })
                .collect();
            let out = port.tx_batch(pool, &mut batch).unwrap();
            assert_eq!((out.sent, out.dropped), (chunk.len(), 0));
            assert!(batch.is_empty());
        }
    }

    #[test]
    fn frames_written_are_read_back_identical_and_in_order() {
        let dir = tmpdir("rt");
        let path = dir.join("out.pcap");
        let fs = frames();
        let mut pool = Pool::new(16);
        {
            let mut out = PcapOutPort::create(3, &path).unwrap();
            send_all(&mut out, &mut pool, &fs);
            out.flush().unwrap();
            assert_eq!(out.written(), fs.len() as u64);
        }
        let mut inp = PcapInPort::open(9, &path).unwrap();
        let mut got = Vec::new();
        while !inp.rx_exhausted() {
            let mut batch = Vec::new();
            inp.rx_batch(&mut pool, &mut batch, 4).unwrap();
            assert!(batch.len() <= 4);
            for b in batch {
                assert_eq!(b.in_port, 9);
                got.push(b.frame().to_vec());
                pool.put(b);
            }
        }
        assert_eq!(got, fs);
        assert_eq!(inp.stats().rx_errors, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_is_deterministic_with_counter_timestamps() {
        let dir = tmpdir("det");
        let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
        let fs = frames();
        let mut pool = Pool::new(16);
        for p in [&a, &b] {
            let mut out = PcapOutPort::create(1, p).unwrap();
            send_all(&mut out, &mut pool, &fs);
            // No explicit flush: drop must flush.
        }
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(ba, bb);
        // Little-endian microsecond magic, then record 1's timestamp: 0 s, 1 us.
        assert_eq!(&ba[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let rec1 = 24 + 16 + fs[0].len();
        assert_eq!(&ba[rec1..rec1 + 8], &[0, 0, 0, 0, 1, 0, 0, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_captures_are_counted_and_skipped() {
        let dir = tmpdir("trunc");
        let path = dir.join("t.pcap");
        {
            let f = File::create(&path).unwrap();
            let mut w = PcapWriter::new(f).unwrap();
            let d = vec![0xaau8; 100];
            w.write_packet(&PcapPacket::new(Duration::ZERO, 100, &d))
                .unwrap();
            w.write_packet(&PcapPacket::new(Duration::ZERO, 1500, &d))
                .unwrap();
            w.write_packet(&PcapPacket::new(Duration::ZERO, 100, &d[..100]))
                .unwrap();
        }
        let mut inp = PcapInPort::open(2, &path).unwrap();
        let mut pool = Pool::new(4);
        let mut batch = Vec::new();
        assert_eq!(inp.rx_batch(&mut pool, &mut batch, 64).unwrap(), 2);
        assert!(inp.rx_exhausted());
        assert_eq!(inp.stats().rx_errors, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tmpdir("err");
        let missing = dir.join("nope.pcap");
        let e = PcapInPort::open(5, &missing).err().unwrap().to_string();
        assert!(e.contains("nope.pcap"), "{e}");
        let junk = dir.join("junk.pcap");
        std::fs::write(&junk, b"definitely not a pcap file").unwrap();
        let e = PcapInPort::open(5, &junk).err().unwrap().to_string();
        assert!(e.contains("junk.pcap"), "{e}");
        let cut = dir.join("cut.pcap");
        {
            let mut out = PcapOutPort::create(1, &cut).unwrap();
            send_all(&mut out, &mut Pool::new(4), &frames()[..3]);
        }
        let mut bytes = std::fs::read(&cut).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&cut, &bytes).unwrap();
        let mut inp = PcapInPort::open(5, &cut).unwrap();
        let mut pool = Pool::new(4);
        let mut batch = Vec::new();
        let e = inp
            .rx_batch(&mut pool, &mut batch, 64)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cut.pcap"), "{e}");
        assert_eq!(batch.len(), 2);
        assert!(inp.rx_exhausted());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn combined_port_replays_and_records() {
        let dir = tmpdir("both");
        let (i, o) = (dir.join("in.pcap"), dir.join("out.pcap"));
        let fs = frames();
        let mut pool = Pool::new(16);
        {
            let mut out = PcapOutPort::create(1, &i).unwrap();
            send_all(&mut out, &mut pool, &fs);
        }
        let mut port = PcapPort::open(7, Some(&i), Some(&o)).unwrap();
        assert!(port.target().contains("in.pcap") && port.target().contains("out.pcap"));
        // Loop every received frame back out: the output must equal the input file.
        while !port.rx_exhausted() {
            let mut batch = Vec::new();
            port.rx_batch(&mut pool, &mut batch, 8).unwrap();
            port.tx_batch(&mut pool, &mut batch).unwrap();
        }
        port.flush().unwrap();
        assert_eq!(std::fs::read(&i).unwrap(), std::fs::read(&o).unwrap());
        assert!(PcapPort::open(7, None, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
