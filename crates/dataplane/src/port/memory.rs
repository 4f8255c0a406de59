//! In-memory port for unit tests: frames are queued in, transmitted frames are kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use packet::{PacketBuf, Pool};

use super::{Port, PortError, TxOutcome};

/// The test side of a [`MemoryPort`]: push frames in, read what was sent.
#[derive(Clone, Default)]
pub struct MemoryHandle {
    inner: Arc<Mutex<Queues>>,
}

#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

impl MemoryHandle {
    /// Queue a frame to be received by the switch on this port.
    pub fn inject(&self, frame: &[u8]) {
        self.lock().rx.push_back(frame.to_vec());
    }
    /// Take every frame the switch sent out of this port so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().tx)
    }
    /// Frames still waiting to be received.
    pub fn pending(&self) -> usize {
        self.lock().rx.len()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A poisoned lock only means a test thread panicked; the queues are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A port whose wire is a pair of in-memory queues.
pub struct MemoryPort {
    id: u16,
    name: String,
    handle: MemoryHandle,
}

impl MemoryPort {
    /// A port and the handle a test drives it with.
    pub fn new(id: u16) -> (MemoryPort, MemoryHandle) {
        let handle = MemoryHandle::default();
        (
            MemoryPort {
                id,
                name: format!("mem{id}"),
                handle: handle.clone(),
            },
            handle,
        )
    }
}

impl Port for MemoryPort {
    fn id(&self) -> u16 {
        self.id
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
    fn target(&self) -> &str {
        &self.name
    }
    fn rx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
        max: usize,
    ) -> Result<usize, PortError> {
        let mut q = self.handle.lock();
        let mut n = 0;
        while n < max {
            let Some(frame) = q.rx.pop_front() else { break };
            let mut b = pool.get();
            if b.set_frame(&frame) {
                b.in_port = self.id;
                batch.push(b);
                n += 1;
            } else {
                pool.put(b);
            }
        }
        Ok(n)
    }
    fn tx_batch(
        &mut self,
        pool: &mut Pool,
        batch: &mut Vec<PacketBuf>,
    ) -> Result<TxOutcome, PortError> {
        let mut q = self.handle.lock();
        let sent = batch.len();
        let mut bytes = 0;
        for b in batch.drain(..) {
            bytes += b.len();
            q.tx.push(b.frame().to_vec());
            pool.put(b);
        }
        Ok(TxOutcome {
            sent,
            bytes,
            dropped: 0,
        })
    }
}
