//! The wire contract of docs/PROTOCOL.md: the plaintext connection handshake and the frames.

pub mod frame;
pub mod handshake;

/// The largest name or value the reference accepts (1 MiB), our default `max_frame_size`.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 20;
