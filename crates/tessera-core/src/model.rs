//! The records Tessera keeps, as the domain sees them.

use std::fmt;
use std::str::FromStr;

use crate::pkce::CodeChallenge;
use crate::secret::SecretHash;
use crate::{ClientId, RedirectUri, ScopeSet, TenantName, UnixTime};

/// Database identity of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId(pub i64);

/// Token lifetimes, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_token: i64,
    pub refresh_token: i64,
    pub authorization_code: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            access_token: 900,
            refresh_token: 30 * 24 * 3600,
            // RFC 6749 §4.1.2 recommends at most ten minutes; we keep a minute.
            authorization_code: 60,
        }
    }
}

impl Lifetimes {
    /// Checks that each lifetime is within sane bounds.
    pub fn validate(self) -> Result<Self, &'static str> {
        if !(60..=86_400).contains(&self.access_token) {
            return Err("the access token lifetime must be 60 to 86400 seconds");
        }
        if !(300..=366 * 86_400).contains(&self.refresh_token) {
            return Err("the refresh token lifetime must be 300 seconds to 366 days");
        }
        // RFC 6749 §4.1.2 recommends at most ten minutes; Tessera keeps codes
        // to a minute, as they are redeemed at once.
        if !(10..=60).contains(&self.authorization_code) {
            return Err("the authorization code lifetime must be 10 to 60 seconds");
        }
        Ok(self)
    }
}

/// What a tenant has switched on, beyond the secure defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSettings {
    /// Whether clients registered for it may use the implicit grant
    /// (RFC 6749 §4.2); off by default (RFC 9700 §2.1.2).
    pub allow_implicit: bool,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub lifetimes: Lifetimes,
    pub settings: TenantSettings,
    pub created_at: UnixTime,
}

/// A scope the tenant defines, with the text the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDefinition {
    pub name: crate::Scope,
    pub description: String,
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue(s.to_owned())),
                }
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value '{0}'")]
pub struct UnknownValue(pub String);

wire_enum! {
    /// Grant types, spelled as in RFC 8414 / RFC 7591 metadata.
    GrantType {
        AuthorizationCode => "authorization_code",
        ClientCredentials => "client_credentials",
        RefreshToken => "refresh_token",
        Password => "password",
        Implicit => "implicit",
    }
}

wire_enum! {
    /// Token endpoint client authentication methods (RFC 7591 §2).
    AuthMethod {
        ClientSecretBasic => "client_secret_basic",
        ClientSecretPost => "client_secret_post",
        None => "none",
    }
}

wire_enum! {
    /// Kinds of application, each with its own secure defaults.
    AppType {
        Web => "web",
        Spa => "spa",
        Native => "native",
        M2m => "m2m",
    }
}

impl AppType {
    /// (confidential, grant types) for this kind of application.
    pub fn defaults(self) -> (bool, Vec<GrantType>) {
        match self {
            AppType::Web => (
                true,
                vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            ),
            // RFC 8252 §8.4 and the browser-based apps BCP: public clients,
            // code with PKCE, refresh tokens rotated on every use.
            AppType::Spa | AppType::Native => (
                false,
                vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            ),
            AppType::M2m => (true, vec![GrantType::ClientCredentials]),
        }
    }
}

wire_enum! {
    /// The form of the access tokens issued to a client.
    TokenFormat {
        Jwt => "jwt",
        Opaque => "opaque",
    }
}

/// A registered client application.
#[derive(Debug, Clone)]
pub struct Client {
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub name: String,
    /// Keyed hash of the secret; `None` for public clients.
    pub secret_hash: Option<SecretHash>,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<RedirectUri>,
    /// The scopes this client may be granted.
    pub scopes: ScopeSet,
    /// The `aud` values of its access tokens.
    pub audiences: Vec<String>,
    pub token_format: TokenFormat,
    /// The kind of application it was registered as, if any.
    pub app_type: Option<AppType>,
    /// Overrides of the tenant's access and refresh token lifetimes.
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub created_at: UnixTime,
}

impl Client {
    /// The lifetimes that apply to this client's tokens.
    pub fn lifetimes(&self, tenant: Lifetimes) -> Lifetimes {
        Lifetimes {
            access_token: self.access_token_ttl.unwrap_or(tenant.access_token),
            refresh_token: self.refresh_token_ttl.unwrap_or(tenant.refresh_token),
            authorization_code: tenant.authorization_code,
        }
    }

    pub fn is_native(&self) -> bool {
        self.app_type == Some(AppType::Native)
    }

    /// RFC 6749 §2.1: a public client cannot keep a secret.
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }

    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// The redirect URI to use for `requested`: a registered one that equals it
    /// exactly (RFC 9700 §4.1.3), or, for a native app, a loopback IP URI that
    /// differs from a registered one only in its port (RFC 8252 §7.3).
    pub fn registered_redirect_uri(&self, requested: &str) -> Option<RedirectUri> {
        if let Some(exact) = self.redirect_uris.iter().find(|u| u.as_str() == requested) {
            return Some(exact.clone());
        }
        if !self.is_native() {
            return None;
        }
        let portless = crate::redirect::loopback_without_port(requested)?;
        self.redirect_uris
            .iter()
            .any(|u| {
                crate::redirect::loopback_without_port(u.as_str()).as_deref()
                    == Some(portless.as_str())
            })
            .then(|| RedirectUri::from_stored(requested.to_owned()))
    }
}

/// A resource owner account.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub tenant_id: TenantId,
    pub username: String,
    pub password_hash: String,
    pub created_at: UnixTime,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .finish()
    }
}

/// An ES256 signing key of a tenant.
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub tenant_id: TenantId,
    /// PKCS#8 private key; never leaves the server.
    pub private_pkcs8: Vec<u8>,
    /// The public key as a JWK (RFC 7517) JSON object.
    pub public_jwk: String,
    pub created_at: UnixTime,
    /// After this instant the key is no longer published; `None` while it is
    /// the current key.
    pub retire_at: Option<UnixTime>,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("private_pkcs8", &"[redacted]")
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

/// An authorization request that has been validated and waits for the
/// resource owner to log in and consent.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    pub id_hash: SecretHash,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub redirect_uri: RedirectUri,
    /// Whether the request named the redirect URI; if so the token request must
    /// repeat it (RFC 6749 §4.1.3).
    pub redirect_uri_in_request: bool,
    pub scope: ScopeSet,
    pub state: Option<String>,
    pub code_challenge: Option<CodeChallenge>,
    pub response_type: crate::grant::ResponseType,
    pub prompt: crate::grant::Prompt,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// A resource owner's standing permission for a client.
#[derive(Debug, Clone)]
pub struct Consent {
    pub client_id: ClientId,
    pub client_name: String,
    pub scope: ScopeSet,
    pub granted_at: UnixTime,
}

/// A logged-in browser session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: SecretHash,
    pub tenant_id: TenantId,
    pub user_id: String,
    pub auth_time: UnixTime,
    pub expires_at: UnixTime,
}

/// An issued authorization code, stored under its hash.
#[derive(Debug, Clone)]
pub struct AuthorizationCode {
    pub code_hash: SecretHash,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub user_id: String,
    pub redirect_uri: RedirectUri,
    pub redirect_uri_in_request: bool,
    pub scope: ScopeSet,
    pub code_challenge: Option<CodeChallenge>,
    pub auth_time: UnixTime,
    pub expires_at: UnixTime,
    /// The token family that redeeming this code starts, so that a replayed
    /// code can revoke what the first redemption issued (RFC 6749 §4.1.2).
    pub family_id: String,
}

/// A refresh token, stored under its hash. All tokens rotated from one grant
/// share a `family_id`.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub token_hash: SecretHash,
    pub family_id: String,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    pub auth_time: Option<UnixTime>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    /// Read back only: already rotated or revoked.
    pub spent: bool,
}

/// An access token as stored: an opaque token under its hash, or a JWT known
/// by its `jti` (to revoke it, alone or with its family).
#[derive(Debug, Clone)]
pub struct AccessTokenRecord {
    /// The keyed hash of an opaque token; `None` for a JWT.
    pub token_hash: Option<SecretHash>,
    pub jti: String,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub user_id: Option<String>,
    pub scope: ScopeSet,
    pub audiences: Vec<String>,
    pub auth_time: Option<UnixTime>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub family_id: Option<String>,
    /// Read back only: whether it has been revoked.
    pub revoked: bool,
}
