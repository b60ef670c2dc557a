//! Bytes waiting to be written to one client, written with as few syscalls as possible.
//!
//! Small packets (acks, headers) are encoded into one scratch buffer; payloads and packets
//! encoded once for many subscribers are appended as shared `Bytes`. `flush` hands the
//! kernel up to 64 chunks per vectored write, so a burst of deliveries costs one syscall.
//!
//! Acknowledge after durable: `gate(ticket)` makes everything appended afterwards wait, in
//! order, until the store has made that ticket durable (`release`); `gate_peers(n)` until
//! the other nodes of a cluster reached confirmation `n`. Bytes appended before a gate are
//! written at once.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use super::transport::Transport;
use crate::broker::session::Out;
use crate::store::journal::Ticket;
use bytes::{Buf, Bytes, BytesMut};
use mqtt_codec::{EncodeError, Packet, ProtocolVersion, Publish};

/// Chunks per vectored write.
const MAX_IOV: usize = 64;

/// Shared bytes up to this size are copied rather than referenced.
const COPY_AT_MOST: usize = 1024;

/// The write queue of one connection: nothing but a null pointer while idle (8 bytes per
/// idle connection instead of 72); its buffers exist from the first write until everything
/// is written.
#[derive(Debug, Default)]
pub(crate) struct Outgoing(Option<Box<Buffers>>);

impl Outgoing {
    fn buffers(&mut self) -> &mut Buffers {
        self.0.get_or_insert_with(Default::default)
    }

    /// Whether no bytes are ready to be written (bytes held behind a gate are not).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_empty())
    }

    /// Bytes waiting, ready or held.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len() + b.held_bytes)
    }

    /// Makes everything appended from now on wait until `ticket` is durable (`NONE`: no
    /// wait).
    pub(crate) fn gate(&mut self, ticket: Ticket) {
        if !ticket.is_none() {
            let b = self.buffers();
            b.gate.ticket = b.gate.ticket.max(ticket);
        }
    }

    /// Makes everything appended from now on wait until the other nodes reached
    /// confirmation `n` (0: no wait).
    pub(crate) fn gate_peers(&mut self, n: u64) {
        if n != 0 {
            let b = self.buffers();
            b.gate.peers = b.gate.peers.max(n);
        }
    }

    /// What the oldest held bytes wait for.
    pub(crate) fn waiting(&self) -> Option<Gate> {
        self.0
            .as_ref()
            .and_then(|b| b.held.front().map(|(g, _)| *g))
    }

    /// Moves the bytes whose ticket is at or below `durable` and whose confirmation is at
    /// or below `confirmed` to the write queue.
    pub(crate) fn release(&mut self, durable: Ticket, confirmed: u64) {
        let Some(b) = self.0.as_mut() else { return };
        while b
            .held
            .front()
            .is_some_and(|(g, _)| g.passed(durable, confirmed))
        {
            if let Some((_, bytes)) = b.held.pop_front() {
                b.held_bytes -= bytes.len();
                b.append(&bytes);
            }
        }
        if b.gate.ticket <= durable {
            b.gate.ticket = Ticket::NONE;
        }
        if b.gate.peers <= confirmed {
            b.gate.peers = 0;
        }
    }

    /// Drops everything held behind a gate, and the gate (the store failed: what waited
    /// for it will never be sent).
    pub(crate) fn discard_held(&mut self) {
        if let Some(b) = self.0.as_mut() {
            b.held.clear();
            b.held_bytes = 0;
            b.gate = Gate::default();
        }
    }

    /// Appends a packet.
    pub(crate) fn packet(
        &mut self,
        packet: &Packet,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        self.buffers().packet(packet, version)
    }

    /// Appends a PUBLISH: its header, then its payload.
    pub(crate) fn publish(
        &mut self,
        publish: &Publish,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        self.buffers().publish(publish, version)
    }

    /// Appends bytes shared with others.
    pub(crate) fn bytes(&mut self, bytes: &Bytes) {
        self.buffers().bytes(bytes);
    }

    /// Writes as much as the connection takes without waiting. `Ok(true)` when everything
    /// was written, down to what the transport held back (and the buffers are released),
    /// `Ok(false)` when the socket is full.
    pub(crate) fn flush(&mut self, io: &mut Transport) -> io::Result<bool> {
        let Some(buffers) = self.0.as_mut() else {
            return io.flush();
        };
        let done = buffers.flush(io)? && io.flush()?;
        if done && buffers.gate.is_open() && buffers.held.is_empty() {
            self.0 = None;
        }
        Ok(done)
    }
}

/// The session core appends what it sends to the connection's write queue.
impl Out for Outgoing {
    fn packet(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
        Outgoing::packet(self, packet, version)
    }

    fn publish(&mut self, publish: &Publish, version: ProtocolVersion) -> Result<(), EncodeError> {
        Outgoing::publish(self, publish, version)
    }

    fn bytes(&mut self, bytes: &Bytes) {
        Outgoing::bytes(self, bytes);
    }

    fn gate(&mut self, ticket: Ticket) {
        Outgoing::gate(self, ticket);
    }

    fn gate_peers(&mut self, n: u64) {
        Outgoing::gate_peers(self, n);
    }

    fn len(&self) -> usize {
        Outgoing::len(self)
    }
}

/// What held bytes wait for: a store ticket and a cluster confirmation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gate {
    /// The store's ticket (`NONE`: none).
    pub(crate) ticket: Ticket,
    /// The other nodes' confirmation (0: none).
    pub(crate) peers: u64,
}

impl Gate {
    /// Whether nothing is waited for.
    fn is_open(self) -> bool {
        self.ticket.is_none() && self.peers == 0
    }

    /// Whether the store reached `durable` and the other nodes `confirmed` past it.
    fn passed(self, durable: Ticket, confirmed: u64) -> bool {
        self.ticket <= durable && self.peers <= confirmed
    }
}

/// The buffers behind a busy connection's write queue.
#[derive(Debug, Default)]
struct Buffers {
    chunks: VecDeque<Bytes>,
    scratch: BytesMut,
    /// Bytes waiting (chunks and scratch).
    queued: usize,
    /// Appends wait for this (open: none).
    gate: Gate,
    /// Encoded packets waiting for their gate, in order.
    held: VecDeque<(Gate, Bytes)>,
    /// Bytes in `held`.
    held_bytes: usize,
}

impl Buffers {
    fn is_empty(&self) -> bool {
        self.queued == 0
    }

    fn len(&self) -> usize {
        self.queued
    }

    /// Holds `bytes` behind the gate.
    fn hold(&mut self, bytes: Bytes) {
        self.held_bytes += bytes.len();
        self.held.push_back((self.gate, bytes));
    }

    /// Appends a packet, encoded into the scratch buffer.
    fn packet(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
        if !self.gate.is_open() {
            let mut buf = BytesMut::new();
            packet.encode(version, &mut buf)?;
            self.hold(buf.freeze());
            return Ok(());
        }
        let before = self.scratch.len();
        packet.encode(version, &mut self.scratch)?;
        self.queued += self.scratch.len() - before;
        Ok(())
    }

    /// Appends a PUBLISH: its header into the scratch buffer, its payload after it.
    fn publish(&mut self, publish: &Publish, version: ProtocolVersion) -> Result<(), EncodeError> {
        if !self.gate.is_open() {
            let mut buf = BytesMut::new();
            publish.encode(version, &mut buf)?;
            self.hold(buf.freeze());
            return Ok(());
        }
        let before = self.scratch.len();
        publish.encode_header(version, &mut self.scratch)?;
        self.queued += self.scratch.len() - before;
        if !publish.payload.is_empty() {
            self.bytes(&publish.payload);
        }
        Ok(())
    }

    /// Appends bytes shared with others (a payload, a packet encoded once for many). Small
    /// ones are copied into the scratch buffer: a memcpy of a few dozen bytes is cheaper than
    /// a reference count touched by every subscriber's thread, and contiguous bytes let one
    /// write carry hundreds of messages. Large ones are referenced, not copied.
    fn bytes(&mut self, bytes: &Bytes) {
        if !self.gate.is_open() {
            self.hold(bytes.clone());
            return;
        }
        self.append(bytes);
    }

    /// Appends bytes to the write queue, past any gate.
    fn append(&mut self, bytes: &Bytes) {
        self.queued += bytes.len();
        if bytes.len() <= COPY_AT_MOST {
            self.scratch.extend_from_slice(bytes);
        } else {
            self.seal();
            self.chunks.push_back(bytes.clone());
        }
    }

    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            self.chunks.push_back(self.scratch.split().freeze());
        }
    }

    fn flush(&mut self, io: &mut Transport) -> io::Result<bool> {
        self.seal();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.chunks.len().min(MAX_IOV);
            for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
            }
            match io.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}
