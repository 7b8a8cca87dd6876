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
        let payload = claims_json(claims)?;
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

impl SigningKey {
    /// Signs `claims` with a header of type `typ` (for other JWTs than access
    /// tokens, such as RFC 9701 introspection responses).
    pub fn sign_typed<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, KeyError> {
        let header = serde_json::json!({"alg": "ES256", "typ": typ, "kid": self.kid});
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        let payload = claims_json(claims)?;
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

/// The claims as JSON, in a buffer that usually holds them at once.
/// `serde_json::to_vec` starts at 128 bytes and grows by `realloc`, which in
/// glibc always takes the lock of the arena the memory came from; memory
/// moves between the worker threads' arenas, so two workers signing at once
/// queued on each other's lock.
fn claims_json<C: Serialize>(claims: &C) -> Result<Vec<u8>, KeyError> {
    let mut payload = Vec::with_capacity(512);
    serde_json::to_writer(&mut payload, claims).map_err(|_| KeyError::Signing)?;
    Ok(payload)
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

/// The claims Tessera reads back from one of its own JWT access tokens.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VerifiedClaims {
    pub iss: String,
    pub sub: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: UnixTime,
    pub iat: UnixTime,
    pub jti: String,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub auth_time: Option<UnixTime>,
    /// The `kid` of the key whose signature was verified.
    #[serde(skip)]
    pub kid: String,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(
        match <OneOrMany as serde::Deserialize>::deserialize(deserializer)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        },
    )
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks that `token` is an `at+jwt` signed with ES256 by one of `public_jwks`
/// (JWK JSON objects, selected by `kid`) and returns its claims. Expiry and
/// issuer are the caller's to check; anything else malformed is `None`.
pub fn verify_access_token<'a>(
    token: &str,
    public_jwks: impl IntoIterator<Item = &'a str>,
) -> Option<VerifiedClaims> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    if token.len() > 8192 {
        return None;
    }
    let mut parts = token.split('.');
    let (header_b64, payload_b64, signature_b64) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).ok()?).ok()?;
    // Only what Tessera itself issues: ES256, typ at+jwt (RFC 9068 §4).
    if header.alg != "ES256" || header.typ.as_deref() != Some("at+jwt") {
        return None;
    }
    let kid = header.kid?;
    let jwk: serde_json::Value = public_jwks
        .into_iter()
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .find(|jwk| jwk["kid"].as_str() == Some(kid.as_str()))?;
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str()?).ok()?;
    let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str()?).ok()?;
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(signed.as_bytes(), &signature)
        .ok()?;
    let mut claims: VerifiedClaims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload_b64).ok()?).ok()?;
    claims.kid = kid;
    Some(claims)
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

    #[test]
    fn verifies_its_own_tokens_only() {
        let generated = generate_key().unwrap();
        let other = generate_key().unwrap();
        let key = SigningKey::from_pkcs8(&generated.kid, &generated.private_pkcs8).unwrap();
        let claims = serde_json::json!({
            "iss": "i", "sub": "s", "aud": "a", "exp": 10, "iat": 1, "jti": "j", "client_id": "c", "scope": "read"
        });
        let token = key.sign(&claims).unwrap();
        let verified = verify_access_token(&token, [generated.public_jwk.as_str()]).unwrap();
        assert_eq!(verified.kid, generated.kid);
        assert_eq!(verified.aud, vec!["a"]);
        assert_eq!(verified.jti, "j");
        assert!(verify_access_token(&token, [other.public_jwk.as_str()]).is_none());
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string().replace("read", "admin"));
        let forged = format!("{header}.{forged_payload}.{signature}");
        assert!(verify_access_token(&forged, [generated.public_jwk.as_str()]).is_none());
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"x"}"#);
        let unsigned = format!("{none_header}.{}.", rest.split_once('.').unwrap().0);
        assert!(verify_access_token(&unsigned, [generated.public_jwk.as_str()]).is_none());
        let introspection = key.sign_typed("token-introspection+jwt", &claims).unwrap();
        assert!(
            verify_access_token(&introspection, [generated.public_jwk.as_str()]).is_none(),
            "typ must be at+jwt"
        );
        assert!(verify_access_token("garbage", [generated.public_jwk.as_str()]).is_none());
    }
}
