//! The structured inputs of the `stream_*` targets and of the client target's encoded mode: a
//! small language of operations, read from the fuzz input, that builds a *plain* frame stream,
//! compresses it with the harness's own encoders (independent of the engine's), and then
//! optionally corrupts or splices the *wire* bytes and splits them into several writes.
//!
//! Each operation is one byte followed by its arguments; a missing argument reads as 0, so
//! every byte string is a valid plan. `op >> 5` selects:
//!
//! | op | meaning |
//! |---|---|
//! | 0, 1 | a frame (request or response): id, name (requests: a literal, or from `0x80` on any value mode), value (see [`Plan::value`]) |
//! | 2 | end of batch: compress the plain bytes so far as one flush (`op & 1`: snappy stored chunks) |
//! | 3 | split: the next wire bytes go in a new write (`op & 0x1f` = k: the boundary goes `k * 4099` bytes back) |
//! | 4 | corrupt: xor the wire byte at offset `u16` with a non-zero `u8` (applied at the end) |
//! | 5 | raw: `u8` bytes from the input appended to the *wire* stream as they are |
//! | 6 | a raw little-endian `u32` appended to the plain stream (odd lengths, torn frames) |
//! | 7 | a length near a boundary appended to the plain stream as `u32` (limit, limit + 1, 2^32 - 1, ...) |

use flate2::{Compress, FlushCompress};

use crate::alloc_limit::exempt;

/// The frame size limit of every harness server and client (the default: 1 MiB).
pub const LIMIT: usize = 1 << 20;

/// Reads arguments from the input; reads past the end give zeros.
pub struct Input<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A reader over `b`.
    pub fn new(b: &'a [u8]) -> Input<'a> {
        Input { b, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let v = self.b.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.b.len());
        let end = (start + n).min(self.b.len());
        self.pos = self.pos.saturating_add(n);
        &self.b[start..end]
    }
}

/// The compression of one direction, as the handshake numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    /// code 0
    Flate,
    /// code 1
    None,
    /// code 2
    Snappy,
}

impl Comp {
    /// The handshake code.
    pub fn code(self) -> u8 {
        match self {
            Comp::Flate => 0,
            Comp::None => 1,
            Comp::Snappy => 2,
        }
    }

    /// The engine's name for it.
    pub fn engine(self) -> fastrpc::Compression {
        match self {
            Comp::Flate => fastrpc::Compression::Flate,
            Comp::None => fastrpc::Compression::None,
            Comp::Snappy => fastrpc::Compression::Snappy,
        }
    }

    /// From the low bits of a selector byte (3 maps to none).
    pub fn from_bits(b: u8) -> Comp {
        match b & 3 {
            0 => Comp::Flate,
            2 => Comp::Snappy,
            _ => Comp::None,
        }
    }
}

/// The snappy stream identifier chunk.
pub const SNAPPY_ID: [u8; 10] = [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];

/// The masked CRC-32C of the snappy framing format.
pub fn masked_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

/// One direction's compressing writer, independent of the engine's encoder.
pub struct Encoder {
    comp: Comp,
    deflate: Compress,
    snappy_started: bool,
}

impl Encoder {
    /// A new stream.
    pub fn new(comp: Comp) -> Encoder {
        Encoder {
            comp,
            deflate: Compress::new(flate2::Compression::new(6), false),
            snappy_started: false,
        }
    }

    /// Appends the wire bytes of one flush of `plain` to `out`. `stored`: snappy uses
    /// uncompressed chunks.
    pub fn flush(&mut self, plain: &[u8], stored: bool, out: &mut Vec<u8>) {
        if plain.is_empty() {
            return;
        }
        match self.comp {
            Comp::None => out.extend_from_slice(plain),
            Comp::Flate => {
                let z = &mut self.deflate;
                out.reserve(plain.len() + plain.len() / 8 + 256);
                let start = z.total_in();
                loop {
                    if out.capacity() - out.len() < 256 {
                        out.reserve(out.capacity().max(4096));
                    }
                    let used = (z.total_in() - start) as usize;
                    z.compress_vec(&plain[used..], out, FlushCompress::Sync)
                        .expect("deflate");
                    let used = (z.total_in() - start) as usize;
                    if used == plain.len() && out.len() < out.capacity() {
                        break;
                    }
                }
            }
            Comp::Snappy => {
                if !self.snappy_started {
                    self.snappy_started = true;
                    out.extend_from_slice(&SNAPPY_ID);
                }
                let mut enc = snap::raw::Encoder::new();
                for block in plain.chunks(65536) {
                    let crc = masked_crc(block).to_le_bytes();
                    let packed = enc.compress_vec(block).expect("snappy");
                    let (kind, body): (u8, &[u8]) = if !stored && packed.len() < block.len() {
                        (0x00, &packed)
                    } else {
                        (0x01, block)
                    };
                    let len = (body.len() + 4) as u32;
                    out.push(kind);
                    out.extend_from_slice(&len.to_le_bytes()[..3]);
                    out.extend_from_slice(&crc);
                    out.extend_from_slice(body);
                }
            }
        }
    }
}

/// Appends a request frame.
pub fn request(out: &mut Vec<u8>, id: u32, name: &[u8], value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Appends a response frame.
pub fn response(out: &mut Vec<u8>, id: u32, value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Which side's frames a plan writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Request frames (to a server).
    Requests,
    /// Response frames (to a client).
    Responses,
}

/// A built plan: the wire bytes split into writes, and what was put in.
pub struct Plan {
    /// The wire bytes, in the order written.
    pub wire: Vec<u8>,
    /// Offsets in `wire` where a new write starts.
    pub splits: Vec<usize>,
    /// The plain stream the frames make (before compression), without raw wire bytes.
    pub plain_total: Vec<u8>,
    /// Whether the wire stream was tampered with (corrupt or raw operations): then the plain
    /// stream is not what the peer decodes.
    pub tampered: bool,
}

const INTERESTING_LENGTHS: [u32; 8] = [
    0,
    1,
    (LIMIT - 1) as u32,
    LIMIT as u32,
    (LIMIT + 1) as u32,
    65535,
    65536,
    u32::MAX,
];

impl Plan {
    /// Builds the plan of `data` for `side`, compressed with `comp`.
    pub fn build(data: &[u8], side: Side, comp: Comp) -> Plan {
        exempt(|| Self::build_inner(data, side, comp))
    }

    /// A frame value: `sel & 3` picks literal bytes (`u8` length), a run (`u16` length
    /// shifted left by `(sel >> 2) & 7`, capped at `LIMIT + 1`, of one byte), a length near a
    /// boundary (0, 1, `LIMIT` - 1, `LIMIT`, `LIMIT` + 1, 64 KiB - 1, 64 KiB, 64 KiB + 1) of one
    /// byte, or literal bytes with a `u16` length.
    fn value(inp: &mut Input<'_>, sel: u8) -> Vec<u8> {
        match sel & 3 {
            0 => {
                let n = inp.u8() as usize;
                inp.bytes(n).to_vec()
            }
            1 => {
                let n = ((inp.u16() as usize) << ((sel >> 2) & 7)).min(LIMIT + 1);
                vec![inp.u8(); n]
            }
            2 => {
                let n = [0, 1, LIMIT - 1, LIMIT, LIMIT + 1, 65535, 65536, 65537]
                    [(inp.u8() & 7) as usize];
                vec![inp.u8(); n]
            }
            _ => {
                let n = inp.u16() as usize;
                inp.bytes(n).to_vec()
            }
        }
    }

    fn build_inner(data: &[u8], side: Side, comp: Comp) -> Plan {
        let mut inp = Input::new(data);
        let mut enc = Encoder::new(comp);
        let mut pending: Vec<u8> = Vec::new();
        let mut plan = Plan {
            wire: Vec::new(),
            splits: Vec::new(),
            plain_total: Vec::new(),
            tampered: false,
        };
        let mut corrupt: Vec<(usize, u8)> = Vec::new();
        let mut steps = 0;
        while !inp.done() && steps < 256 {
            steps += 1;
            let op = inp.u8();
            match op >> 5 {
                0 | 1 => {
                    let id = match side {
                        Side::Requests => inp.u8() as u32 | ((op as u32 & 0x10) << 4),
                        Side::Responses => (inp.u8() % 8) as u32,
                    };
                    let before = pending.len();
                    match side {
                        Side::Requests => {
                            // Name: below 0x80 a literal of up to 31 bytes, else a value
                            // of any mode (runs and boundary lengths up to LIMIT + 1).
                            let nsel = inp.u8();
                            let name = if nsel < 0x80 {
                                let n = (nsel % 32) as usize;
                                inp.bytes(n).to_vec()
                            } else {
                                Self::value(&mut inp, nsel)
                            };
                            let value = Self::value(&mut inp, op);
                            request(&mut pending, id, &name, &value);
                        }
                        Side::Responses => {
                            let value = Self::value(&mut inp, op);
                            response(&mut pending, id, &value);
                        }
                    }
                    plan.plain_total.extend_from_slice(&pending[before..]);
                }
                2 => {
                    enc.flush(&pending, op & 1 == 1, &mut plan.wire);
                    pending.clear();
                }
                3 => {
                    enc.flush(&pending, false, &mut plan.wire);
                    pending.clear();
                    // `op & 0x1f` = k > 0 puts the boundary k * 4099 bytes back, inside the
                    // frames already written (a frame's last bytes in a later read).
                    let back = (op & 0x1f) as usize * 4099;
                    if plan.splits.len() < 16 {
                        plan.splits.push(plan.wire.len().saturating_sub(back));
                    }
                }
                4 => {
                    let at = inp.u16() as usize;
                    corrupt.push((at, inp.u8() | 1));
                }
                5 => {
                    enc.flush(&pending, false, &mut plan.wire);
                    pending.clear();
                    let n = inp.u8() as usize;
                    plan.wire.extend_from_slice(inp.bytes(n));
                    plan.tampered = true;
                }
                6 => {
                    let v = inp.u32().to_le_bytes();
                    pending.extend_from_slice(&v);
                    plan.plain_total.extend_from_slice(&v);
                }
                _ => {
                    let v = INTERESTING_LENGTHS[(op & 7) as usize].to_le_bytes();
                    pending.extend_from_slice(&v);
                    plan.plain_total.extend_from_slice(&v);
                }
            }
        }
        enc.flush(&pending, false, &mut plan.wire);
        for (at, x) in corrupt {
            if !plan.wire.is_empty() {
                let i = at % plan.wire.len();
                plan.wire[i] ^= x;
                plan.tampered = true;
            }
        }
        plan.splits.retain(|&s| s > 0 && s < plan.wire.len());
        plan.splits.sort_unstable();
        plan.splits.dedup();
        plan
    }

    /// The wire bytes as the writes that carry them.
    pub fn writes(&self) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut start = 0;
        for &s in &self.splits {
            if s > start {
                out.push(&self.wire[start..s]);
                start = s;
            }
        }
        if start < self.wire.len() {
            out.push(&self.wire[start..]);
        }
        out
    }
}

/// Appends a plan operation that writes one frame with a literal value (for seeds).
pub fn op_frame(out: &mut Vec<u8>, side: Side, id: u8, name: &[u8], value: &[u8]) {
    assert!(name.len() < 32 && value.len() < 65536);
    out.push(0x03); // op 0, value mode 3 (literal, u16 length)
    out.push(id);
    if side == Side::Requests {
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// Appends a frame whose value is a run of `byte`: `len16 << shift` bytes (for seeds).
pub fn op_run(out: &mut Vec<u8>, side: Side, id: u8, name: &[u8], len16: u16, shift: u8, byte: u8) {
    out.push(0x01 | (shift & 7) << 2);
    out.push(id);
    if side == Side::Requests {
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }
    out.extend_from_slice(&len16.to_le_bytes());
    out.push(byte);
}

/// Appends a frame with a value length near a boundary (`which` indexes 0, 1, LIMIT - 1,
/// LIMIT, LIMIT + 1, 65535, 65536, 65537).
pub fn op_boundary(out: &mut Vec<u8>, side: Side, id: u8, name: &[u8], which: u8, byte: u8) {
    out.push(0x02);
    out.push(id);
    if side == Side::Requests {
        out.push(name.len() as u8);
        out.extend_from_slice(name);
    }
    out.push(which);
    out.push(byte);
}

/// Appends a request whose name and value both have boundary lengths (`which` as in
/// [`op_boundary`]): with `which` = 3 a frame of `12 + 2 * LIMIT` bytes, the largest allowed.
pub fn op_big_request(out: &mut Vec<u8>, id: u8, name_which: u8, value_which: u8, byte: u8) {
    out.push(0x02);
    out.push(id);
    out.push(0x82);
    out.push(name_which);
    out.push(byte);
    out.push(value_which);
    out.push(byte);
}

/// End of batch.
pub fn op_flush(out: &mut Vec<u8>, stored: bool) {
    out.push(2 << 5 | stored as u8);
}

/// A write boundary.
pub fn op_split(out: &mut Vec<u8>) {
    out.push(3 << 5);
}

/// A write boundary `k * 4099` bytes (k < 32) before the end of what was written so far.
pub fn op_split_back(out: &mut Vec<u8>, k: u8) {
    out.push(3 << 5 | (k & 0x1f));
}

/// Corrupt one wire byte.
pub fn op_corrupt(out: &mut Vec<u8>, at: u16, x: u8) {
    out.push(4 << 5);
    out.extend_from_slice(&at.to_le_bytes());
    out.push(x);
}

/// Raw wire bytes.
pub fn op_raw(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(5 << 5);
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// A raw u32 into the plain stream.
pub fn op_u32(out: &mut Vec<u8>, v: u32) {
    out.push(6 << 5);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A boundary length into the plain stream (`which` indexes 0, 1, LIMIT - 1, LIMIT,
/// LIMIT + 1, 65535, 65536, u32::MAX).
pub fn op_len(out: &mut Vec<u8>, which: u8) {
    out.push(7 << 5 | (which & 7));
}
