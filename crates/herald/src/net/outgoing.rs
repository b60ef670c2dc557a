//! Bytes waiting to be written to one client, written with as few syscalls as possible.
//!
//! Small packets (acks, headers) are encoded into one scratch buffer; payloads and packets
//! encoded once for many subscribers are appended as shared `Bytes`. `flush` hands the
//! kernel up to 64 chunks per vectored write, so a burst of deliveries costs one syscall.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use mqtt_codec::{EncodeError, Packet, ProtocolVersion, Publish};
use tokio::net::TcpStream;

/// Chunks per vectored write.
const MAX_IOV: usize = 64;

/// Shared bytes up to this size are copied rather than referenced.
const COPY_AT_MOST: usize = 1024;

/// The write queue of one connection. Empty and unallocated while idle.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    chunks: VecDeque<Bytes>,
    scratch: BytesMut,
    /// Bytes waiting (chunks and scratch).
    queued: usize,
}

impl Outgoing {
    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    /// Appends a packet, encoded into the scratch buffer.
    pub(crate) fn packet(
        &mut self,
        packet: &Packet,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
        let before = self.scratch.len();
        packet.encode(version, &mut self.scratch)?;
        self.queued += self.scratch.len() - before;
        Ok(())
    }

    /// Appends a PUBLISH: its header into the scratch buffer, its payload after it.
    pub(crate) fn publish(
        &mut self,
        publish: &Publish,
        version: ProtocolVersion,
    ) -> Result<(), EncodeError> {
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
    pub(crate) fn bytes(&mut self, bytes: &Bytes) {
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

    /// Writes as much as the socket takes without waiting. `Ok(true)` when everything was
    /// written, `Ok(false)` when the socket is full.
    pub(crate) fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        self.seal();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.chunks.len().min(MAX_IOV);
            for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
            }
            match stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // Everything is written: keep no buffer (the scratch buffer's allocation is shared with
        // the chunks split off it, and would otherwise stay alive while the connection idles).
        self.scratch = BytesMut::new();
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
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
    }
}
