//! Packet buffers with headroom, recycled through a per-worker pool.
//!
//! A [`PacketBuf`] is a fixed-size heap block with [`HEADROOM`] bytes reserved in
//! front of the frame, so an encapsulating stage prepends a header by moving the
//! start offset instead of copying the frame (Snabb's `prepend`). Buffers never
//! grow: a frame longer than [`MAX_FRAME`] is refused by the port and counted.
//! The [`Pool`] hands buffers out and takes them back, so a worker in steady
//! state allocates nothing per packet.

/// Bytes reserved in front of a received frame for encapsulation headers.
pub const HEADROOM: usize = 256;
/// Largest frame (Ethernet header included, FCS excluded) a buffer holds.
pub const MAX_FRAME: usize = 9216;
/// Total bytes of one buffer.
pub const BUF_CAPACITY: usize = HEADROOM + MAX_FRAME;

/// One packet: a frame somewhere inside a fixed block, plus the port it came in on.
pub struct PacketBuf {
    data: Box<[u8]>,
    start: usize,
    len: usize,
    /// Switch port number the frame was received on (0 for locally made packets).
    pub in_port: u16,
}

impl PacketBuf {
    /// A fresh, empty buffer. Prefer [`Pool::get`] on the packet path.
    pub fn new() -> PacketBuf {
        PacketBuf {
            data: vec![0u8; BUF_CAPACITY].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            in_port: 0,
        }
    }

    /// A buffer holding a copy of `frame` (tests, pcap input, control-plane injects).
    /// Returns `None` when the frame is longer than [`MAX_FRAME`].
    pub fn from_slice(frame: &[u8]) -> Option<PacketBuf> {
        let mut b = PacketBuf::new();
        b.set_frame(frame).then_some(b)
    }

    /// Replace the contents with a copy of `frame` at the default headroom.
    /// Returns false (and leaves the buffer empty) when it does not fit.
    #[must_use]
    pub fn set_frame(&mut self, frame: &[u8]) -> bool {
        self.start = HEADROOM;
        if frame.len() > MAX_FRAME {
            self.len = 0;
            return false;
        }
        self.data[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.len = frame.len();
        true
    }

    /// Reset to an empty frame at the default headroom, ready for a receive.
    pub fn reset(&mut self) {
        self.start = HEADROOM;
        self.len = 0;
        self.in_port = 0;
    }

    /// The frame bytes.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    /// The frame bytes, writable, for in-place rewrites.
    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.len]
    }

    /// Frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Space after the headroom that a port may receive into; pair with [`PacketBuf::set_len`].
    #[inline]
    pub fn rx_space(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        &mut self.data[HEADROOM..]
    }

    /// Set the frame length after a receive into [`PacketBuf::rx_space`].
    /// Lengths past the buffer are clamped, never trusted.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len() - self.start);
    }

    /// Grow the frame at the front by `n` bytes (an encapsulation header) and
    /// return the new header space. `None` when the headroom is used up.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        self.len += n;
        Some(&mut self.data[self.start..self.start + n])
    }

    /// Drop `n` bytes from the front (decapsulation). `false` when the frame is shorter.
    #[must_use]
    pub fn strip_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }

    /// Shorten the frame to `len` bytes (removing padding or a trailer); longer lengths are ignored.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
        }
    }

    /// Append bytes at the end; `false` when they do not fit.
    #[must_use]
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        let end = self.start + self.len;
        if end + bytes.len() > self.data.len() {
            return false;
        }
        self.data[end..end + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        PacketBuf::new()
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("in_port", &self.in_port)
            .field("len", &self.len)
            .field("headroom", &self.start)
            .finish()
    }
}

/// A freelist of buffers owned by one worker: no locks, no allocation once warm.
///
/// When the pool runs dry it allocates a fresh buffer rather than dropping the
/// packet, and counts it, so a too-small pool shows up in the counters.
pub struct Pool {
    free: Vec<PacketBuf>,
    allocated: u64,
}

impl Pool {
    /// A pool pre-filled with `n` buffers.
    pub fn new(n: usize) -> Pool {
        let mut free = Vec::with_capacity(n.max(1) * 2);
        free.extend((0..n).map(|_| PacketBuf::new()));
        Pool {
            free,
            allocated: n as u64,
        }
    }

    /// Take an empty buffer.
    #[inline]
    pub fn get(&mut self) -> PacketBuf {
        match self.free.pop() {
            Some(mut b) => {
                b.reset();
                b
            }
            None => {
                self.allocated += 1;
                PacketBuf::new()
            }
        }
    }

    /// Give a buffer back.
    #[inline]
    pub fn put(&mut self, b: PacketBuf) {
        self.free.push(b);
    }

    /// Give back every buffer left in `batch`.
    #[inline]
    pub fn put_all(&mut self, batch: &mut Vec<PacketBuf>) {
        self.free.append(batch);
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers ever allocated by this pool (grows only when it ran dry).
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_strip_move_the_start_without_copying_the_frame() {
        let mut b = PacketBuf::from_slice(&[1, 2, 3, 4]).unwrap();
        let h = b.prepend(2).unwrap();
        h.copy_from_slice(&[9, 8]);
        assert_eq!(b.frame(), &[9, 8, 1, 2, 3, 4]);
        assert!(b.strip_front(3));
        assert_eq!(b.frame(), &[2, 3, 4]);
        assert!(!b.strip_front(4));
        assert!(b.prepend(HEADROOM + 10).is_none());
    }

    #[test]
    fn oversize_frames_are_refused() {
        assert!(PacketBuf::from_slice(&vec![0u8; MAX_FRAME + 1]).is_none());
        assert_eq!(
            PacketBuf::from_slice(&vec![7u8; MAX_FRAME]).unwrap().len(),
            MAX_FRAME
        );
    }

    #[test]
    fn set_len_is_clamped_to_the_buffer() {
        let mut b = PacketBuf::new();
        b.rx_space()[0] = 5;
        b.set_len(usize::MAX);
        assert_eq!(b.len(), MAX_FRAME);
    }

    #[test]
    fn pool_recycles_and_counts_growth() {
        let mut p = Pool::new(2);
        let a = p.get();
        let b = p.get();
        let c = p.get();
        assert_eq!(p.allocated(), 3);
        p.put(a);
        p.put(b);
        p.put(c);
        assert_eq!(p.available(), 3);
        let mut d = p.get();
        assert!(d.is_empty());
        assert!(d.append(&[1, 2]));
        assert_eq!(d.frame(), &[1, 2]);
    }
}
