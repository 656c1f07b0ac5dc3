//! Verifies that a webhook body was signed by Facebook with our app secret.
//!
//! `X-Hub-Signature-256: sha256=<hex>` is HMAC-SHA256 of the exact raw body bytes; the
//! legacy `X-Hub-Signature: sha1=<hex>` is accepted only when the 256 header is absent.
//! Comparison is constant-time (`Mac::verify_slice`). This module never logs or returns
//! the secret or the expected digest: a mismatch says only which check failed.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use thiserror::Error;

pub const HEADER_SHA256: &str = "x-hub-signature-256";
pub const HEADER_SHA1: &str = "x-hub-signature";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed {header} header: expected {prefix}=<hex digest>")]
    Malformed {
        header: &'static str,
        prefix: &'static str,
    },
    #[error("{header} does not match the body")]
    Mismatch { header: &'static str },
}

/// Checks the signature headers (`sha256` preferred, `sha1` as fallback) against the body.
pub fn verify(
    secret: &[u8],
    body: &[u8],
    sha256_header: Option<&[u8]>,
    sha1_header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    match (sha256_header, sha1_header) {
        (Some(header), _) => {
            verify_with::<Hmac<Sha256>>(secret, body, header, "X-Hub-Signature-256", "sha256")
        }
        (None, Some(header)) => {
            verify_with::<Hmac<Sha1>>(secret, body, header, "X-Hub-Signature", "sha1")
        }
        (None, None) => Err(SignatureError::Missing),
    }
}

fn verify_with<M: Mac + hmac::digest::KeyInit>(
    secret: &[u8],
    body: &[u8],
    header: &[u8],
    name: &'static str,
    prefix: &'static str,
) -> Result<(), SignatureError> {
    let malformed = SignatureError::Malformed {
        header: name,
        prefix,
    };
    let digest_hex = header
        .strip_prefix(prefix.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"="))
        .ok_or_else(|| malformed.clone())?;
    let digest = hex::decode(digest_hex).map_err(|_| malformed)?;
    // HMAC accepts keys of any length, so this cannot fail; treat it as a mismatch anyway.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
        .map_err(|_| SignatureError::Mismatch { header: name })?;
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch { header: name })
}

/// `sha256=<hex>` of a body: what Facebook sends, and what tests and the load generator sign with.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `sha1=<hex>` of a body, for the legacy header. Only tests sign with SHA-1.
#[cfg(any(test, feature = "test-support"))]
pub fn sign_sha1(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha1> as hmac::digest::KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";
    const BODY: &[u8] = br#"{"object":"page","entry":[]}"#;

    #[test]
    fn a_correct_sha256_signature_is_accepted() {
        let header = sign_sha256(SECRET, BODY);
        assert_eq!(verify(SECRET, BODY, Some(header.as_bytes()), None), Ok(()));
    }

    #[test]
    fn a_known_hmac_sha256_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign_sha256(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_of_another_body_is_a_mismatch() {
        let header = sign_sha256(SECRET, b"{}");
        assert_eq!(
            verify(SECRET, BODY, Some(header.as_bytes()), None),
            Err(SignatureError::Mismatch {
                header: "X-Hub-Signature-256"
            })
        );
    }

    #[test]
    fn a_signature_made_with_another_secret_is_a_mismatch() {
        let header = sign_sha256(b"other", BODY);
        assert!(matches!(
            verify(SECRET, BODY, Some(header.as_bytes()), None),
            Err(SignatureError::Mismatch { .. })
        ));
    }

    #[test]
    fn sha1_is_accepted_only_without_the_sha256_header() {
        let sha1 = sign_sha1(SECRET, BODY);
        assert_eq!(verify(SECRET, BODY, None, Some(sha1.as_bytes())), Ok(()));
        let wrong256 = sign_sha256(b"other", BODY);
        assert!(verify(
            SECRET,
            BODY,
            Some(wrong256.as_bytes()),
            Some(sha1.as_bytes())
        )
        .is_err());
    }

    #[test]
    fn malformed_and_missing_headers_are_reported_as_such() {
        assert_eq!(
            verify(SECRET, BODY, None, None),
            Err(SignatureError::Missing)
        );
        for header in [&b"sha256"[..], b"sha256=zz", b"md5=abcd", b"", b"sha256:00"] {
            assert!(
                matches!(
                    verify(SECRET, BODY, Some(header), None),
                    Err(SignatureError::Malformed { .. })
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_truncated_digest_is_a_mismatch_not_a_panic() {
        let mut header = sign_sha256(SECRET, BODY);
        header.truncate(20);
        assert!(verify(SECRET, BODY, Some(header.as_bytes()), None).is_err());
    }
}
