//! The TLS record layer after the handshake: AEAD sealing and opening of TLS 1.2 and 1.3
//! records in place, in buffers the connection owns and reuses.
//!
//! rustls runs the handshake and then hands over the traffic secrets (its `kernel` API, made
//! for kTLS); this module protects the records with `ring`, as rustls' own `ring` provider
//! would, but without the Vec rustls 0.23 allocates for every record in each direction (its
//! unbuffered API included). Supported: the AEAD suites rustls offers (AES-128/256-GCM and
//! ChaCha20-Poly1305) in TLS 1.2 (RFC 5288, RFC 7905) and TLS 1.3 (RFC 8446 section 5).

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, SupportedCipherSuite};

/// The most plaintext one record carries.
pub(crate) const MAX_PLAIN: usize = 16 * 1024;
/// A record header: type, legacy version, payload length.
pub(crate) const HEADER: usize = 5;
/// The largest payload accepted from the peer: TLS 1.2 allows 2048 bytes of expansion over
/// the plaintext (TLS 1.3 only 256).
pub(crate) const MAX_PAYLOAD: usize = MAX_PLAIN + 2048;
/// Most bytes a sealed record adds to its plaintext (header, explicit nonce, type, tag).
pub(crate) const MAX_OVERHEAD: usize = HEADER + 8 + 1 + TAG;
const TAG: usize = 16;

/// Content types (RFC 8446 section 5.1).
pub(crate) const ALERT: u8 = 21;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;

/// The key, IV and sequence number of one direction.
pub(crate) struct RecordKey {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
    tls13: bool,
    /// TLS 1.2 AES-GCM: an 8-byte explicit nonce precedes each record's ciphertext.
    explicit_nonce: bool,
    /// Records allowed under one key (the suite's confidentiality limit).
    limit: u64,
}

fn err(msg: &str) -> rustls::Error {
    rustls::Error::General(msg.to_string())
}

impl RecordKey {
    /// The key for `secrets` starting at sequence number `seq`.
    pub(crate) fn new(
        secrets: ConnectionTrafficSecrets,
        seq: u64,
        suite: SupportedCipherSuite,
    ) -> Result<RecordKey, rustls::Error> {
        let (tls13, limit) = match suite {
            SupportedCipherSuite::Tls12(s) => (false, s.common.confidentiality_limit),
            SupportedCipherSuite::Tls13(s) => (true, s.common.confidentiality_limit),
        };
        let (alg, key, iv, gcm) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, true),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, true),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, false)
            }
            _ => return Err(err("unsupported TLS cipher suite: only AEAD suites are")),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| err("bad TLS traffic key"))?;
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| err("bad TLS traffic IV"))?;
        Ok(RecordKey {
            key: LessSafeKey::new(key),
            iv,
            seq,
            tls13,
            explicit_nonce: gcm && !tls13,
            limit,
        })
    }

    /// True when the key has protected as many records as it safely may (keep a margin for
    /// the TLS 1.3 KeyUpdate or close_notify that follows).
    pub(crate) fn exhausted(&self) -> bool {
        self.seq >= self.limit.saturating_sub(4)
    }

    pub(crate) fn is_tls13(&self) -> bool {
        self.tls13
    }

    /// IV xor the sequence number (RFC 8446 section 5.3; TLS 1.2 ChaCha20 and our GCM
    /// explicit nonces are built the same way).
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (a, b) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *a ^= b;
        }
        n
    }

    fn tls12_aad(&self, typ: u8, len: usize) -> [u8; 13] {
        let mut a = [0u8; 13];
        a[..8].copy_from_slice(&self.seq.to_be_bytes());
        a[8] = typ;
        a[9] = 3;
        a[10] = 3;
        a[11..].copy_from_slice(&(len as u16).to_be_bytes());
        a
    }

    /// Appends one record of content type `typ` carrying `plain` (at most [`MAX_PLAIN`]
    /// bytes) to `out`. Allocates only if `out` lacks [`MAX_OVERHEAD`] bytes of spare room
    /// past the plaintext.
    pub(crate) fn seal(
        &mut self,
        typ: u8,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        debug_assert!(plain.len() <= MAX_PLAIN);
        if self.seq == u64::MAX {
            return Err(rustls::Error::EncryptError);
        }
        let start = out.len();
        let explicit = if self.explicit_nonce { 8 } else { 0 };
        let inner = self.tls13 as usize;
        let len = explicit + plain.len() + inner + TAG;
        let outer = if self.tls13 { APPLICATION_DATA } else { typ };
        out.extend_from_slice(&[outer, 3, 3]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        let nonce = self.nonce();
        if self.explicit_nonce {
            out.extend_from_slice(&nonce[4..]);
        }
        let body = out.len();
        out.extend_from_slice(plain);
        if self.tls13 {
            out.push(typ);
        }
        let mut aad13 = [0u8; HEADER];
        let aad12;
        let aad: &[u8] = if self.tls13 {
            aad13.copy_from_slice(&out[start..start + HEADER]);
            &aad13
        } else {
            aad12 = self.tls12_aad(typ, plain.len());
            &aad12
        };
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[body..],
            )
            .map_err(|_| rustls::Error::EncryptError)?;
        out.extend_from_slice(tag.as_ref());
        self.seq += 1;
        Ok(())
    }

    /// Opens one whole record (header included) in place. Returns its content type and where
    /// its plaintext now is within `rec`.
    pub(crate) fn open(&mut self, rec: &mut [u8]) -> Result<(u8, Range<usize>), rustls::Error> {
        let outer = rec[0];
        let (head, payload) = rec.split_at_mut(HEADER);
        let explicit = if self.explicit_nonce { 8 } else { 0 };
        if payload.len() < explicit + TAG + self.tls13 as usize {
            return Err(rustls::Error::DecryptError);
        }
        if self.seq == u64::MAX {
            return Err(rustls::Error::DecryptError);
        }
        let plain_len = payload.len() - explicit - TAG;
        let (typ, range) = if self.tls13 {
            if outer != APPLICATION_DATA {
                return Err(err(
                    "received an unencrypted TLS record after the handshake",
                ));
            }
            let nonce = Nonce::assume_unique_for_key(self.nonce());
            let plain = self
                .key
                .open_in_place(nonce, Aad::from(&*head), payload)
                .map_err(|_| rustls::Error::DecryptError)?;
            // Strip the zero padding; the last non-zero byte is the real content type.
            let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                return Err(err("received a TLS 1.3 record with no content type"));
            };
            (plain[end], HEADER..HEADER + end)
        } else {
            let mut nonce = self.nonce();
            if self.explicit_nonce {
                nonce[4..].copy_from_slice(&payload[..8]);
            }
            let aad = self.tls12_aad(outer, plain_len);
            self.key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad),
                    &mut payload[explicit..],
                )
                .map_err(|_| rustls::Error::DecryptError)?;
            let at = HEADER + explicit;
            (outer, at..at + plain_len)
        };
        self.seq += 1;
        Ok((typ, range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(secrets: fn() -> ConnectionTrafficSecrets, suite: SupportedCipherSuite) {
        let mut tx = RecordKey::new(secrets(), 7, suite).unwrap();
        let mut rx = RecordKey::new(secrets(), 7, suite).unwrap();
        let mut out = Vec::new();
        tx.seal(APPLICATION_DATA, b"hello", &mut out).unwrap();
        tx.seal(ALERT, &[1, 0], &mut out).unwrap();
        let first = HEADER + u16::from_be_bytes([out[3], out[4]]) as usize;
        let (a, b) = out.split_at_mut(first);
        let (t, r) = rx.open(a).unwrap();
        assert_eq!((t, &a[r]), (APPLICATION_DATA, &b"hello"[..]));
        let (t, r) = rx.open(b).unwrap();
        assert_eq!((t, &b[r]), (ALERT, &[1u8, 0][..]));
        // A flipped bit, or a record replayed out of sequence, does not open.
        let mut again = Vec::new();
        tx.seal(APPLICATION_DATA, b"x", &mut again).unwrap();
        let last = again.len() - 1;
        again[last] ^= 1;
        assert!(rx.open(&mut again).is_err());
    }

    fn aes256() -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Aes256Gcm {
            key: [9u8; 32].into(),
            iv: rustls::crypto::cipher::Iv::new([3u8; 12]),
        }
    }

    fn chacha() -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: [5u8; 32].into(),
            iv: rustls::crypto::cipher::Iv::new([1u8; 12]),
        }
    }

    #[test]
    fn seal_open_round_trips() {
        use rustls::crypto::ring::cipher_suite as cs;
        pair(aes256, cs::TLS13_AES_256_GCM_SHA384);
        pair(aes256, cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
        pair(chacha, cs::TLS13_CHACHA20_POLY1305_SHA256);
        pair(chacha, cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256);
    }
}
