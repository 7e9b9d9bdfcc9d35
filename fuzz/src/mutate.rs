//! A deterministic, coverage-free mutator for the `replay` driver: seeded xorshift, byte and
//! structure-aware mutations (lengths near the limit, splices between corpus entries). The
//! same seed gives the same inputs on every machine.

use crate::plan::LIMIT;

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One byte.
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

const INTERESTING_U8: [u8; 10] = [0, 1, 2, 3, 0x7f, 0x80, 0xfe, 0xff, 0x10, 0x20];
const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    7,
    (LIMIT - 1) as u32,
    LIMIT as u32,
    (LIMIT + 1) as u32,
    65535,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    u32::MAX,
];

/// Applies 1 to 4 mutations to `data` (others: the corpus, for splices). Keeps the length at
/// most `max_len`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>], max_len: usize) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(12) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING_U8[rng.below(INTERESTING_U8.len())];
            }
            2 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = data[i].wrapping_add(1 + rng.below(8) as u8);
            }
            3 => {
                let at = rng.below(data.len() + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                data.splice(at..at, ins);
            }
            4 if !data.is_empty() => {
                let at = rng.below(data.len());
                let n = 1 + rng.below((data.len() - at).min(32));
                data.drain(at..at + n);
            }
            5 if data.len() >= 4 => {
                let at = rng.below(data.len() - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                data[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            6 if !data.is_empty() => {
                // Duplicate a range (repeated frames, repeated chunks).
                let at = rng.below(data.len());
                let n = 1 + rng.below((data.len() - at).min(256));
                let copy = data[at..at + n].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, copy);
            }
            7 if !others.is_empty() => {
                // Splice: our head, another entry's tail.
                let o = &others[rng.below(others.len())];
                let cut = rng.below(data.len() + 1);
                let from = rng.below(o.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&o[from..]);
            }
            8 if !data.is_empty() => {
                let n = rng.below(data.len());
                data.truncate(n);
            }
            9 => {
                let n = 1 + rng.below(64);
                for _ in 0..n {
                    data.push(rng.byte());
                }
            }
            10 if data.len() >= 2 => {
                // Swap two bytes.
                let a = rng.below(data.len());
                let b = rng.below(data.len());
                data.swap(a, b);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.byte();
            }
            _ => data.push(rng.byte()),
        }
    }
    data.truncate(max_len);
}
