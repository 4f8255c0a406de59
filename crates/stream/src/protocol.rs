//! The stream wire format, shared by `stream-server` and `loadgen`.
//!
//! Plain framing instead of upstream's WebSocket: every message starts with the same 40-byte
//! little-endian header, and `len` covers the whole message, so a reader always knows how many
//! bytes to wait for and a hole or duplicate is visible from `seq` alone.
//!
//! ```text
//!  0  magic u32 = 0x5342_4652 ("SBFR" as LE bytes 52 46 42 53)
//!  4  kind  u8  (1 frame, 2 echo, 3 ping)
//!  5  pad   [u8; 3] = 0
//!  8  len   u32  total message length, header included (frames: the frame size, default 512)
//! 12  generation u32  server generation: 0 for the first server, +1 on every restore
//! 16  seq   u64  frames: per-connection frame number from 0; ping/echo: the ping's number
//! 24  ts_ns u64  CLOCK_MONOTONIC ns at send (frame/echo: server; ping: client)
//! 32  client_ts_ns u64  echo: the ping's ts_ns; otherwise 0
//! 40  padding (zeros) up to len
//! ```
//!
//! CLOCK_MONOTONIC is shared by every network namespace of one machine, so a client can compare
//! a frame's `ts_ns` with its own clock.

/// "SBFR" in little-endian byte order.
pub const MAGIC: u32 = 0x5342_4652;
/// Header length; also the length of pings and echoes.
pub const HEADER_LEN: usize = 40;
/// Upstream's frame payload size (512 bytes of padding); our frames are 512 bytes in all.
pub const DEFAULT_FRAME_LEN: usize = 512;
/// Largest message a reader accepts; anything longer is a protocol error.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Server -> client data frame, `fps` per second per connection.
    Frame = 1,
    /// Server -> client answer to a ping.
    Echo = 2,
    /// Client -> server ping.
    Ping = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kind::Frame),
            2 => Some(Kind::Echo),
            3 => Some(Kind::Ping),
            _ => None,
        }
    }
}

/// A decoded message header (the padding is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub len: u32,
    pub generation: u32,
    pub seq: u64,
    pub ts_ns: u64,
    pub client_ts_ns: u64,
}

/// Why bytes could not be read as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("message length {0} outside {HEADER_LEN}..={MAX_MESSAGE_LEN}")]
    BadLength(u32),
}

impl Header {
    /// A client ping numbered `seq`, stamped now.
    pub fn ping(seq: u64) -> Header {
        Header {
            kind: Kind::Ping,
            len: HEADER_LEN as u32,
            generation: 0,
            seq,
            ts_ns: monotonic_ns(),
            client_ts_ns: 0,
        }
    }

    /// Write the header into `out[..HEADER_LEN]` and zero `out[HEADER_LEN..len]`.
    /// `out` must be at least `self.len` bytes long.
    pub fn encode(&self, out: &mut [u8]) {
        let len = self.len as usize;
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4] = self.kind as u8;
        out[5..8].fill(0);
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.ts_ns.to_le_bytes());
        out[32..40].copy_from_slice(&self.client_ts_ns.to_le_bytes());
        out[HEADER_LEN..len].fill(0);
    }

    /// The whole message as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len as usize];
        self.encode(&mut v);
        v
    }

    /// Decode a header from the first [`HEADER_LEN`] bytes. `Ok(None)` means more bytes are
    /// needed; the caller then waits for `len` bytes in all before consuming the message.
    pub fn decode(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let u32_at = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        let kind = Kind::from_u8(buf[4]).ok_or(ProtocolError::UnknownKind(buf[4]))?;
        let len = u32_at(8);
        if (len as usize) < HEADER_LEN || len as usize > MAX_MESSAGE_LEN {
            return Err(ProtocolError::BadLength(len));
        }
        Ok(Some(Header {
            kind,
            len,
            generation: u32_at(12),
            seq: u64_at(16),
            ts_ns: u64_at(24),
            client_ts_ns: u64_at(32),
        }))
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every timestamp in this protocol uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_pads_with_zeros() {
        let h = Header {
            kind: Kind::Frame,
            len: 512,
            generation: 3,
            seq: 0x0102_0304_0506_0708,
            ts_ns: 42,
            client_ts_ns: 0,
        };
        let v = h.to_vec();
        assert_eq!(v.len(), 512);
        assert_eq!(&v[0..4], b"RFBS");
        assert!(v[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(Header::decode(&v).unwrap(), Some(h));
        assert_eq!(Header::decode(&v[..39]).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut v = Header {
            kind: Kind::Ping,
            len: 40,
            generation: 0,
            seq: 1,
            ts_ns: 2,
            client_ts_ns: 0,
        }
        .to_vec();
        v[4] = 9;
        assert_eq!(Header::decode(&v), Err(ProtocolError::UnknownKind(9)));
        v[4] = 3;
        v[8..12].copy_from_slice(&39u32.to_le_bytes());
        assert_eq!(Header::decode(&v), Err(ProtocolError::BadLength(39)));
        v[0] = 0;
        assert!(matches!(
            Header::decode(&v),
            Err(ProtocolError::BadMagic(_))
        ));
    }
}
