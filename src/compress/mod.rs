//! Placeholder: the per-direction compression streams (being written).
/// Compression of one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// Raw DEFLATE with a sync flush at every flush (code 0, the reference's default).
    #[default]
    Flate,
    /// No compression (code 1).
    None,
    /// Snappy framing format (code 2).
    Snappy,
}
