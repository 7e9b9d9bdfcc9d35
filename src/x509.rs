//! Just enough DER to show who a verified client certificate names: its subject as text
//! (`CN=client,O=Example`) and its subject alternative names (`DNS:host,IP:10.0.0.1`). The
//! certificate was already verified by rustls; this only reads it. Anything it does not
//! understand is left out of the text, never an error.

/// One DER element: (tag, contents, rest).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let mut l = 0usize;
        for &x in &b[..n] {
            l = (l << 8) | x as usize;
        }
        b = &b[n..];
        l
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// The elements of a constructed value's contents.
fn children(mut b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let Some((t, c, rest)) = element(b) {
        out.push((t, c));
        b = rest;
    }
    out
}

/// The fields of tbsCertificate, without the optional `[0] version`.
fn tbs_fields(der: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let mut f = children(tbs);
    if f.first().map(|x| x.0) == Some(0xa0) {
        f.remove(0);
    }
    Some(f)
}

fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x05] => "serialNumber",
        _ => return None,
    })
}

/// The subject as `CN=...,O=...` in certificate order (attributes other than CN, C, L, ST,
/// O, OU and serialNumber are left out). Empty when the certificate cannot be read.
pub(crate) fn subject(der: &[u8]) -> String {
    let Some(f) = tbs_fields(der) else {
        return String::new();
    };
    // serialNumber, signature, issuer, validity, subject.
    let Some(&(0x30, name)) = f.get(4) else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (_, set) in children(name) {
        for (_, atv) in children(set) {
            let kv = children(atv);
            if let (Some(&(0x06, oid)), Some(&(_, v))) = (kv.first(), kv.get(1)) {
                if let (Some(k), Ok(v)) = (attribute_name(oid), std::str::from_utf8(v)) {
                    parts.push(format!("{k}={v}"));
                }
            }
        }
    }
    parts.join(",")
}

/// The subject alternative names as `DNS:name`, `IP:addr`, `email:addr` and `URI:uri`,
/// joined by commas. Empty when there are none or the certificate cannot be read.
pub(crate) fn subject_alt_names(der: &[u8]) -> String {
    let Some(f) = tbs_fields(der) else {
        return String::new();
    };
    let Some(&(_, exts)) = f.iter().find(|x| x.0 == 0xa3) else {
        return String::new();
    };
    let Some((_, seq, _)) = element(exts) else {
        return String::new();
    };
    let mut names = Vec::new();
    for (_, ext) in children(seq) {
        let e = children(ext);
        if e.first() != Some(&(0x06, &[0x55, 0x1d, 0x11][..])) {
            continue;
        }
        let Some(&(0x04, value)) = e.last() else {
            continue;
        };
        let Some((_, general_names, _)) = element(value) else {
            continue;
        };
        for (tag, v) in children(general_names) {
            let text = match tag {
                0x82 => std::str::from_utf8(v).ok().map(|s| format!("DNS:{s}")),
                0x81 => std::str::from_utf8(v).ok().map(|s| format!("email:{s}")),
                0x86 => std::str::from_utf8(v).ok().map(|s| format!("URI:{s}")),
                0x87 => match v.len() {
                    4 => Some(format!(
                        "IP:{}",
                        std::net::Ipv4Addr::new(v[0], v[1], v[2], v[3])
                    )),
                    16 => {
                        let a: [u8; 16] = v.try_into().expect("16 bytes");
                        Some(format!("IP:{}", std::net::Ipv6Addr::from(a)))
                    }
                    _ => None,
                },
                _ => None,
            };
            names.extend(text);
        }
    }
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_sans_of_a_generated_certificate() {
        let mut p = rcgen::CertificateParams::new(vec![
            "client.example".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "fastrpc client");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Org");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        assert_eq!(subject(&der), "CN=fastrpc client,O=Example Org");
        assert_eq!(
            subject_alt_names(&der),
            "DNS:client.example,IP:127.0.0.1,IP:::1"
        );
        // Garbage and truncation give empty text, never a panic.
        assert_eq!(subject(b"not a certificate"), "");
        assert_eq!(subject_alt_names(&der[..der.len() / 2]), "");
        assert_eq!(subject(&[]), "");
    }
}
