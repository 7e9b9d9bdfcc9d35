//! Request and response frames inside the decompressed stream (docs/PROTOCOL.md section 2):
//! encoding by appending to a buffer, and a cheap "is a whole frame here?" parse that says
//! how many bytes are still missing instead of reading more.
//!
//! All integers are u32 little-endian. A name or value longer than the configured limit is an
//! error as soon as its length field is seen, so a peer can never make us buffer more.

use crate::error::{Error, ErrorKind};

/// Bytes of a request frame around its name and value: id, name length, value length.
pub const REQUEST_OVERHEAD: usize = 12;
/// Bytes of a response frame around its value: id, value length.
pub const RESPONSE_OVERHEAD: usize = 8;

#[inline]
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Appends a request frame. The caller has checked the lengths against the limit.
#[inline]
pub fn encode_request(out: &mut Vec<u8>, id: u32, name: &[u8], value: &[u8]) {
    out.reserve(REQUEST_OVERHEAD + name.len() + value.len());
    put_u32(out, id);
    put_u32(out, name.len() as u32);
    out.extend_from_slice(name);
    put_u32(out, value.len() as u32);
    out.extend_from_slice(value);
}

/// Appends a response frame. The caller has checked the length against the limit.
#[inline]
pub fn encode_response(out: &mut Vec<u8>, id: u32, value: &[u8]) {
    out.reserve(RESPONSE_OVERHEAD + value.len());
    put_u32(out, id);
    put_u32(out, value.len() as u32);
    out.extend_from_slice(value);
}

/// The outcome of looking for one frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// A whole frame: its parts, and how many bytes it took.
    Frame(T, usize),
    /// Not yet a whole frame: at least this many bytes in all are needed.
    Incomplete(usize),
}

/// A request frame's parts, as ranges of the buffer it was parsed from.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct RequestParts {
    /// The request id (0: no response wanted).
    pub id: u32,
    /// Where the name lies.
    pub name: std::ops::Range<usize>,
    /// Where the value lies.
    pub value: std::ops::Range<usize>,
}

/// A response frame's parts.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct ResponseParts {
    /// The id of the request it answers.
    pub id: u32,
    /// Where the value lies.
    pub value: std::ops::Range<usize>,
}

fn too_large(what: &str, len: u32, limit: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("{what} length {len} exceeds max_frame_size {limit}"),
    )
}

/// Looks for a whole request frame at the start of `b`.
#[inline]
pub fn parse_request(b: &[u8], limit: usize) -> Result<Parse<RequestParts>, Error> {
    if b.len() < 8 {
        return Ok(Parse::Incomplete(8));
    }
    let id = get_u32(b, 0);
    let nlen = get_u32(b, 4);
    if nlen as usize > limit {
        return Err(too_large("request name", nlen, limit));
    }
    let name_end = 8 + nlen as usize;
    if b.len() < name_end + 4 {
        return Ok(Parse::Incomplete(name_end + 4));
    }
    let vlen = get_u32(b, name_end);
    if vlen as usize > limit {
        return Err(too_large("request value", vlen, limit));
    }
    let end = name_end + 4 + vlen as usize;
    if b.len() < end {
        return Ok(Parse::Incomplete(end));
    }
    Ok(Parse::Frame(
        RequestParts {
            id,
            name: 8..name_end,
            value: name_end + 4..end,
        },
        end,
    ))
}

/// Looks for a whole response frame at the start of `b`.
#[inline]
pub fn parse_response(b: &[u8], limit: usize) -> Result<Parse<ResponseParts>, Error> {
    if b.len() < 8 {
        return Ok(Parse::Incomplete(8));
    }
    let id = get_u32(b, 0);
    let vlen = get_u32(b, 4);
    if vlen as usize > limit {
        return Err(too_large("response value", vlen, limit));
    }
    let end = 8 + vlen as usize;
    if b.len() < end {
        return Ok(Parse::Incomplete(end));
    }
    Ok(Parse::Frame(ResponseParts { id, value: 8..end }, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_are_exact() {
        let mut b = Vec::new();
        encode_request(&mut b, 1, b"foo", b"foobar");
        assert_eq!(
            b,
            [
                1, 0, 0, 0, 3, 0, 0, 0, b'f', b'o', b'o', 6, 0, 0, 0, b'f', b'o', b'o', b'b', b'a',
                b'r'
            ]
        );
        let parsed = parse_request(&b, 1 << 20).unwrap();
        assert_eq!(
            parsed,
            Parse::Frame(
                RequestParts {
                    id: 1,
                    name: 8..11,
                    value: 15..21
                },
                21
            )
        );
    }

    #[test]
    fn response_bytes_are_exact() {
        let mut b = Vec::new();
        encode_response(&mut b, 0x01020304, b"ok");
        assert_eq!(b, [4, 3, 2, 1, 2, 0, 0, 0, b'o', b'k']);
        assert_eq!(
            parse_response(&b, 10).unwrap(),
            Parse::Frame(
                ResponseParts {
                    id: 0x01020304,
                    value: 8..10
                },
                10
            )
        );
    }

    #[test]
    fn every_truncation_is_incomplete_with_the_right_need() {
        let mut b = Vec::new();
        encode_request(&mut b, 7, b"name", b"value!");
        for cut in 0..b.len() {
            match parse_request(&b[..cut], 100).unwrap() {
                Parse::Incomplete(need) => assert!(need > cut && need <= b.len(), "cut {cut}"),
                Parse::Frame(..) => panic!("frame from {cut} bytes"),
            }
        }
        let mut r = Vec::new();
        encode_response(&mut r, 7, b"value!");
        for cut in 0..r.len() {
            assert!(matches!(
                parse_response(&r[..cut], 100).unwrap(),
                Parse::Incomplete(_)
            ));
        }
    }

    #[test]
    fn lengths_over_the_limit_are_refused_before_the_body_arrives() {
        let mut b = vec![1, 0, 0, 0];
        b.extend_from_slice(&11u32.to_le_bytes());
        let e = parse_request(&b, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert_eq!(
            e.message(),
            "request name length 11 exceeds max_frame_size 10"
        );
        let mut r = vec![1, 0, 0, 0];
        r.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = parse_response(&r, 1 << 20).unwrap_err();
        assert_eq!(
            e.message(),
            "response value length 4294967295 exceeds max_frame_size 1048576"
        );
        // exactly the limit is fine
        let mut ok = Vec::new();
        encode_request(&mut ok, 1, &[0; 10], &[1; 10]);
        assert!(matches!(parse_request(&ok, 10).unwrap(), Parse::Frame(..)));
    }
}
