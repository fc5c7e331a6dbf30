//! The identity a client certificate carries: its subject's common name (as Kubernetes
//! and CockroachDB read client certificates). The certificate has been verified against
//! the CA by rustls before it is read here; this only walks its DER to the name.

/// One DER element at the start of `input`: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// 2.5.4.3, commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = element(rest)? else {
        return None;
    };
    while !subject.is_empty() {
        let (SET, mut rdn, next) = element(subject)? else {
            return None;
        };
        subject = next;
        while !rdn.is_empty() {
            let (SEQUENCE, attribute, next) = element(rdn)? else {
                return None;
            };
            rdn = next;
            let (OID, oid, value) = element(attribute)? else {
                return None;
            };
            if oid == COMMON_NAME {
                let (_, text, _) = element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn reads_the_common_name_of_generated_certificates() {
        let dir = std::env::temp_dir().join(format!("paygrid-cn-{}", std::process::id()));
        crate::certs::create(&dir, &["exec-payments"]).unwrap();
        for (file, name) in [
            ("client.exec-payments.crt", "exec-payments"),
            ("node.crt", "node"),
        ] {
            let certs = crate::tls::read_certs(&dir.join(file)).unwrap();
            assert_eq!(super::common_name(&certs[0]).as_deref(), Some(name));
        }
        assert_eq!(super::common_name(b"\x30\x03\x02\x01"), None);
        assert_eq!(super::common_name(&[]), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
