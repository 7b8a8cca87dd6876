//! ES256 signing keys and JWT access tokens (RFC 9068).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::UnixTime;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a signing key")]
    Generation,
    #[error("the stored signing key is not a valid P-256 PKCS#8 key")]
    Malformed,
    #[error("signing failed")]
    Signing,
}

/// A parsed ES256 private key, ready to sign. Parse once, sign many times.
pub struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    /// `{"alg":"ES256","typ":"at+jwt","kid":...}`, base64url-encoded once.
    encoded_header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// A freshly generated key: its PKCS#8 document and public JWK.
pub struct GeneratedKey {
    pub kid: String,
    pub private_pkcs8: Vec<u8>,
    pub public_jwk: String,
}

/// Generates a new P-256 key. The kid is the key's JWK thumbprint (RFC 7638).
pub fn generate_key() -> Result<GeneratedKey, KeyError> {
    let document =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Generation)?;
    let private_pkcs8 = document.as_ref().to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &private_pkcs8)
        .map_err(|_| KeyError::Malformed)?;
    let (x, y) = public_coordinates(&pair)?;
    // RFC 7638 §3.2: the required members in lexicographic order, no spaces.
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(crate::crypto::sha256(thumbprint_input.as_bytes()));
    let public_jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y,
        "kid": kid, "use": "sig", "alg": "ES256",
    })
    .to_string();
    Ok(GeneratedKey {
        kid,
        private_pkcs8,
        public_jwk,
    })
}

fn public_coordinates(pair: &EcdsaKeyPair) -> Result<(String, String), KeyError> {
    // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err(KeyError::Malformed);
    }
    Ok((
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65]),
    ))
}

impl SigningKey {
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| KeyError::Malformed)?;
        let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
        Ok(SigningKey {
            kid: kid.to_owned(),
            pair,
            encoded_header: URL_SAFE_NO_PAD.encode(header.to_string()),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as a compact JWS with header `typ: at+jwt` (RFC 9068 §2.1).
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Signing)?;
        let mut token =
            String::with_capacity(self.encoded_header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| KeyError::Signing)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// The claims of a JWT access token (RFC 9068 §2.2).
#[derive(Debug, Clone, Serialize)]
pub struct AccessTokenClaims<'a> {
    pub iss: &'a str,
    /// The resource owner, or the client itself for client_credentials.
    pub sub: &'a str,
    pub aud: Audience<'a>,
    pub exp: UnixTime,
    pub iat: UnixTime,
    pub jti: &'a str,
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<UnixTime>,
}

/// `aud`: a single string when there is one audience, else an array
/// (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> Audience<'a> {
    pub fn of(audiences: &'a [String]) -> Self {
        match audiences {
            [one] => Audience::One(one),
            many => Audience::Many(many),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_verifiable_jwt() {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
        let generated = generate_key().unwrap();
        let key = SigningKey::from_pkcs8(&generated.kid, &generated.private_pkcs8).unwrap();
        let token = key.sign(&serde_json::json!({"sub": "x"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["kid"], generated.kid.as_str());
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &generated.private_pkcs8)
                .unwrap();
        let public = UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
    }
}
