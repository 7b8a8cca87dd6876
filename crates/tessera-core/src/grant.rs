//! Protocol decisions of the authorization and token endpoints, as pure
//! functions over request data and stored records. The server fetches and
//! stores; these functions decide.

use crate::pkce::{CodeChallenge, PkceError};
use crate::{
    AuthorizationCode, AuthorizeError, Client, GrantType, RedirectUri, RefreshTokenRecord,
    ScopeSet, TokenError, UnixTime,
};

/// The scope a client asked for, checked against what it may have.
///
/// RFC 6749 §3.3: without a `scope` parameter the client's registered scopes
/// are the default. A scope outside the client's registration is refused
/// rather than silently dropped, so a misconfigured client finds out at once.
pub fn requested_scope(requested: Option<&str>, client: &Client) -> Result<ScopeSet, ScopeProblem> {
    let Some(requested) = requested else {
        return Ok(client.scopes.clone());
    };
    let scope = ScopeSet::parse(requested).map_err(|_| ScopeProblem::Malformed)?;
    if !scope.is_subset_of(&client.scopes) {
        return Err(ScopeProblem::NotAllowed);
    }
    Ok(scope)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeProblem {
    Malformed,
    NotAllowed,
}

impl ScopeProblem {
    pub fn description(self) -> &'static str {
        match self {
            ScopeProblem::Malformed => "scope is malformed",
            ScopeProblem::NotAllowed => "scope includes a scope this client may not request",
        }
    }
}

impl From<ScopeProblem> for TokenError {
    fn from(problem: ScopeProblem) -> Self {
        TokenError::InvalidScope(problem.description())
    }
}

impl From<ScopeProblem> for AuthorizeError {
    fn from(problem: ScopeProblem) -> Self {
        AuthorizeError::InvalidScope(problem.description())
    }
}

/// The parameters of an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3),
/// each already checked for repetition.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuthorizationParams<'a> {
    pub response_type: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub state: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
}

/// What an authorization request may go on with once it passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedAuthorization {
    pub redirect_uri: RedirectUri,
    pub redirect_uri_in_request: bool,
    pub scope: ScopeSet,
    pub code_challenge: Option<CodeChallenge>,
}

/// Why the redirect URI cannot be trusted: shown on a page, never redirected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntrustedRedirect {
    Missing,
    NotRegistered,
}

/// Resolves the redirect URI of an authorization request. RFC 9700 §4.1.3:
/// exact string match against a registered URI; RFC 6749 §3.1.2.3: it may be
/// omitted only when exactly one is registered.
pub fn resolve_redirect_uri(
    client: &Client,
    requested: Option<&str>,
) -> Result<(RedirectUri, bool), UntrustedRedirect> {
    match requested {
        Some(requested) => client
            .registered_redirect_uri(requested)
            .map(|uri| (uri, true))
            .ok_or(UntrustedRedirect::NotRegistered),
        None => match client.redirect_uris.as_slice() {
            [only] => Ok((only.clone(), false)),
            _ => Err(UntrustedRedirect::Missing),
        },
    }
}

/// Validates an authorization request whose client and redirect URI are
/// already trusted; errors here are redirected to that URI (RFC 6749 §4.1.2.1,
/// §4.2.2.1). `implicit_enabled` is the tenant's setting for `response_type=token`.
pub fn validate_authorization_request(
    client: &Client,
    params: &AuthorizationParams<'_>,
    implicit_enabled: bool,
) -> Result<ValidRequest, AuthorizeError> {
    let response_type = match params.response_type {
        None => return Err(AuthorizeError::InvalidRequest("response_type is required")),
        Some("code") => ResponseType::Code,
        // RFC 9700 §2.1.2: the implicit grant SHOULD NOT be used; Tessera
        // offers it only where both the tenant and the client opted in.
        Some("token") if implicit_enabled && client.allows_grant(GrantType::Implicit) => {
            ResponseType::Token
        }
        Some(_) => return Err(AuthorizeError::UnsupportedResponseType),
    };
    if response_type == ResponseType::Code && !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(AuthorizeError::UnauthorizedClient(
            "this client is not registered for the authorization_code grant",
        ));
    }
    let code_challenge = match (params.code_challenge, params.code_challenge_method) {
        // PKCE protects a code; the implicit grant has none.
        _ if response_type == ResponseType::Token => None,
        (Some(challenge), method) => Some(CodeChallenge::parse_s256(challenge, method).map_err(
            |problem| match problem {
                PkceError::UnsupportedMethod => {
                    AuthorizeError::InvalidRequest("code_challenge_method must be S256")
                }
                PkceError::MalformedChallenge => {
                    AuthorizeError::InvalidRequest("code_challenge is malformed")
                }
            },
        )?),
        (None, Some(_)) => {
            return Err(AuthorizeError::InvalidRequest(
                "code_challenge_method without code_challenge",
            ));
        }
        (None, None) => None,
    };
    // RFC 9700 §2.1.1: public clients MUST use PKCE.
    if response_type == ResponseType::Code && client.is_public() && code_challenge.is_none() {
        return Err(AuthorizeError::InvalidRequest(
            "code_challenge (PKCE with S256) is required for public clients",
        ));
    }
    let scope = requested_scope(params.scope, client)?;
    Ok(ValidRequest {
        response_type,
        scope,
        code_challenge,
    })
}

/// The `prompt` parameter (OpenID Connect Core §3.1.2.1, registered for OAuth
/// in RFC 6749 §11.2): whether the user must be asked, and for what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Show no page at all: answer at once or fail.
    pub none: bool,
    /// Ask for the password again, even with a live session.
    pub login: bool,
    /// Ask for consent again, even when it was given before.
    pub consent: bool,
}

impl Prompt {
    /// Parses the space-delimited list; unknown values are ignored, `none`
    /// with anything else is an error.
    pub fn parse(text: Option<&str>) -> Result<Self, AuthorizeError> {
        let mut prompt = Prompt::default();
        for value in text.unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                _ => {}
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(AuthorizeError::InvalidRequest(
                "prompt=none cannot be combined with other values",
            ));
        }
        Ok(prompt)
    }

    /// The stored form.
    pub fn to_text(self) -> String {
        let mut values = Vec::new();
        if self.none {
            values.push("none");
        }
        if self.login {
            values.push("login");
        }
        if self.consent {
            values.push("consent");
        }
        values.join(" ")
    }
}

/// Whether a standing consent lets an authorization skip the consent page:
/// every requested scope was consented to before, and the client did not ask
/// to prompt again.
pub fn consent_covers(consented: Option<&ScopeSet>, requested: &ScopeSet, prompt: Prompt) -> bool {
    !prompt.consent && consented.is_some_and(|scopes| requested.is_subset_of(scopes))
}

/// What the authorization endpoint returns (RFC 6749 §3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    /// An authorization code in the query (§4.1.2).
    Code,
    /// An access token in the fragment: the implicit grant (§4.2.2).
    Token,
}

impl ResponseType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Code => "code",
            ResponseType::Token => "token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "code" => Some(ResponseType::Code),
            "token" => Some(ResponseType::Token),
            _ => None,
        }
    }
}

/// A valid authorization request: what to return, for which scope, and the
/// PKCE challenge of a code request.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub response_type: ResponseType,
    pub scope: ScopeSet,
    pub code_challenge: Option<CodeChallenge>,
}

/// What a client hears of a code that is unknown, spent, or issued to
/// another client: the same words, so that a client presenting a stolen
/// code cannot tell it is live (RFC 9700 §4.5).
pub const CODE_INVALID: &str = "the code is invalid or was already used";

/// What a client hears of a refresh token that is unknown, spent, revoked or
/// issued to another client, for the same reason as [`CODE_INVALID`].
pub const REFRESH_TOKEN_INVALID: &str = "the refresh token is invalid";

/// Checks a stored, unused authorization code against the token request
/// that presented it (RFC 6749 §4.1.3, RFC 7636 §4.6).
pub fn check_code_redemption(
    code: &AuthorizationCode,
    client: &Client,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    now: UnixTime,
) -> Result<(), TokenError> {
    // RFC 6749 §4.1.3: the code must have been issued to the authenticated client.
    if code.client_id != client.client_id {
        return Err(TokenError::InvalidGrant(CODE_INVALID));
    }
    if now.is_at_or_after(code.expires_at) {
        return Err(TokenError::InvalidGrant("the code has expired"));
    }
    // RFC 6749 §4.1.3: redirect_uri must be identical to the one in the
    // authorization request if it was included there.
    match (code.redirect_uri_in_request, redirect_uri) {
        (true, Some(given)) if given == code.redirect_uri.as_str() => {}
        (true, _) => return Err(TokenError::InvalidGrant("redirect_uri does not match")),
        (false, Some(given)) if given != code.redirect_uri.as_str() => {
            return Err(TokenError::InvalidGrant("redirect_uri does not match"));
        }
        (false, _) => {}
    }
    match (&code.code_challenge, code_verifier) {
        (Some(challenge), Some(verifier)) if challenge.is_satisfied_by(verifier) => Ok(()),
        (Some(_), _) => Err(TokenError::InvalidGrant("PKCE verification failed")),
        // RFC 9700 §2.1.1: a verifier for a code issued without a challenge
        // signals a PKCE downgrade attempt.
        (None, Some(_)) => Err(TokenError::InvalidGrant(
            "code_verifier sent for a code issued without code_challenge",
        )),
        (None, None) => Ok(()),
    }
}

/// Checks a refresh token before rotation and returns the scope of the new
/// access token (RFC 6749 §6).
pub fn check_refresh(
    record: &RefreshTokenRecord,
    client: &Client,
    requested_scope: Option<&str>,
    now: UnixTime,
) -> Result<ScopeSet, TokenError> {
    // RFC 6749 §6: the refresh token must have been issued to this client.
    if record.client_id != client.client_id {
        return Err(TokenError::InvalidGrant(REFRESH_TOKEN_INVALID));
    }
    if now.is_at_or_after(record.expires_at) {
        return Err(TokenError::InvalidGrant("the refresh token has expired"));
    }
    if !client.allows_grant(GrantType::RefreshToken) {
        return Err(TokenError::UnauthorizedClient(
            "this client is not registered for the refresh_token grant",
        ));
    }
    // A scope taken from the client (or the tenant) since is no longer granted.
    let granted = record.scope.intersection(&client.scopes);
    match requested_scope {
        None => Ok(granted),
        Some(requested) => {
            let scope = ScopeSet::parse(requested)
                .map_err(|_| TokenError::InvalidScope("scope is malformed"))?;
            // RFC 6749 §6: the scope may narrow, never widen, the original grant.
            if !scope.is_subset_of(&granted) {
                return Err(TokenError::InvalidScope(
                    "scope exceeds the scope originally granted",
                ));
            }
            Ok(scope)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretHash;
    use crate::{AuthMethod, ClientId, TenantId, TokenFormat};

    fn client(public: bool) -> Client {
        Client {
            tenant_id: TenantId(1),
            client_id: ClientId::new("c1"),
            name: "app".into(),
            secret_hash: None,
            auth_method: if public {
                AuthMethod::None
            } else {
                AuthMethod::ClientSecretBasic
            },
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            redirect_uris: vec![RedirectUri::parse("https://app.example/cb").unwrap()],
            scopes: ScopeSet::parse("read write").unwrap(),
            audiences: vec![],
            token_format: TokenFormat::Jwt,
            app_type: None,
            access_token_ttl: None,
            refresh_token_ttl: None,
            created_at: UnixTime(0),
        }
    }

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn code(challenge: Option<&str>, redirect_in_request: bool) -> AuthorizationCode {
        AuthorizationCode {
            code_hash: SecretHash(vec![]),
            tenant_id: TenantId(1),
            client_id: ClientId::new("c1"),
            user_id: "u1".into(),
            redirect_uri: RedirectUri::parse("https://app.example/cb").unwrap(),
            redirect_uri_in_request: redirect_in_request,
            scope: ScopeSet::parse("read").unwrap(),
            code_challenge: challenge.map(|c| CodeChallenge::parse_s256(c, Some("S256")).unwrap()),
            auth_time: UnixTime(100),
            expires_at: UnixTime(160),
            family_id: "f".into(),
        }
    }

    #[test]
    fn scope_defaults_and_limits() {
        let c = client(false);
        assert_eq!(requested_scope(None, &c).unwrap().to_string(), "read write");
        assert_eq!(
            requested_scope(Some("read"), &c).unwrap().to_string(),
            "read"
        );
        assert_eq!(
            requested_scope(Some("admin"), &c),
            Err(ScopeProblem::NotAllowed)
        );
        assert_eq!(
            requested_scope(Some("a\\b"), &c),
            Err(ScopeProblem::Malformed)
        );
    }

    #[test]
    fn redirect_uri_resolution() {
        let c = client(false);
        assert!(
            resolve_redirect_uri(&c, Some("https://app.example/cb"))
                .unwrap()
                .1
        );
        assert!(
            !resolve_redirect_uri(&c, None).unwrap().1,
            "one registered: may be omitted"
        );
        assert_eq!(
            resolve_redirect_uri(&c, Some("https://app.example/cb/")),
            Err(UntrustedRedirect::NotRegistered)
        );
        let mut two = c.clone();
        two.redirect_uris
            .push(RedirectUri::parse("https://app.example/other").unwrap());
        assert_eq!(
            resolve_redirect_uri(&two, None),
            Err(UntrustedRedirect::Missing)
        );
    }

    #[test]
    fn authorization_requests() {
        let params = |response_type, challenge, method| AuthorizationParams {
            response_type,
            code_challenge: challenge,
            code_challenge_method: method,
            ..AuthorizationParams::default()
        };
        let validate = validate_authorization_request;
        let public = client(true);
        let confidential = client(false);
        let pkce = params(Some("code"), Some(CHALLENGE), Some("S256"));
        assert!(validate(&public, &pkce, false).is_ok());
        let no_pkce = params(Some("code"), None, None);
        assert!(matches!(
            validate(&public, &no_pkce, false),
            Err(AuthorizeError::InvalidRequest(_))
        ));
        assert!(validate(&confidential, &no_pkce, false).is_ok());
        let plain = params(Some("code"), Some(CHALLENGE), Some("plain"));
        assert!(matches!(
            validate(&confidential, &plain, false),
            Err(AuthorizeError::InvalidRequest(_))
        ));
        let mut m2m = confidential.clone();
        m2m.grant_types = vec![GrantType::ClientCredentials];
        assert!(matches!(
            validate(&m2m, &no_pkce, false),
            Err(AuthorizeError::UnauthorizedClient(_))
        ));

        // The implicit grant needs the tenant's and the client's opt-in.
        let token = params(Some("token"), None, None);
        assert_eq!(
            validate(&public, &token, true).unwrap_err(),
            AuthorizeError::UnsupportedResponseType
        );
        let mut implicit = public.clone();
        implicit.grant_types.push(GrantType::Implicit);
        assert_eq!(
            validate(&implicit, &token, false).unwrap_err(),
            AuthorizeError::UnsupportedResponseType
        );
        let valid = validate(&implicit, &token, true).unwrap();
        assert_eq!(valid.response_type, ResponseType::Token);
        assert!(valid.code_challenge.is_none());
    }

    #[test]
    fn prompts_and_remembered_consent() {
        assert_eq!(Prompt::parse(None).unwrap(), Prompt::default());
        let p = Prompt::parse(Some("login consent select_account")).unwrap();
        assert!(p.login && p.consent && !p.none);
        assert_eq!(Prompt::parse(Some(&p.to_text())).unwrap(), p);
        assert!(Prompt::parse(Some("none consent")).is_err());
        let read = ScopeSet::parse("read").unwrap();
        let both = ScopeSet::parse("read write").unwrap();
        assert!(consent_covers(Some(&both), &read, Prompt::default()));
        assert!(
            !consent_covers(Some(&read), &both, Prompt::default()),
            "new scopes ask again"
        );
        assert!(!consent_covers(None, &read, Prompt::default()));
        let forced = Prompt {
            consent: true,
            ..Prompt::default()
        };
        assert!(!consent_covers(Some(&both), &read, forced));
    }

    #[test]
    fn code_redemption_rules() {
        let c = client(true);
        let uri = Some("https://app.example/cb");
        let ok = code(Some(CHALLENGE), true);
        assert!(check_code_redemption(&ok, &c, uri, Some(VERIFIER), UnixTime(120)).is_ok());
        // Expired at exactly expires_at.
        assert!(check_code_redemption(&ok, &c, uri, Some(VERIFIER), UnixTime(160)).is_err());
        // redirect_uri must be repeated when it was in the request.
        assert!(check_code_redemption(&ok, &c, None, Some(VERIFIER), UnixTime(120)).is_err());
        let omitted = code(Some(CHALLENGE), false);
        assert!(check_code_redemption(&omitted, &c, None, Some(VERIFIER), UnixTime(120)).is_ok());
        // PKCE: wrong, missing, and downgrade.
        assert!(
            check_code_redemption(
                &ok,
                &c,
                uri,
                Some(&VERIFIER.replace('d', "D")),
                UnixTime(120)
            )
            .is_err()
        );
        assert!(check_code_redemption(&ok, &c, uri, None, UnixTime(120)).is_err());
        let without = code(None, true);
        assert!(check_code_redemption(&without, &c, uri, Some(VERIFIER), UnixTime(120)).is_err());
        assert!(check_code_redemption(&without, &c, uri, None, UnixTime(120)).is_ok());
        // Bound to the client.
        let mut other = c.clone();
        other.client_id = ClientId::new("c2");
        assert!(check_code_redemption(&ok, &other, uri, Some(VERIFIER), UnixTime(120)).is_err());
    }

    #[test]
    fn refresh_rules() {
        let c = client(true);
        let record = RefreshTokenRecord {
            token_hash: SecretHash(vec![]),
            family_id: "f".into(),
            tenant_id: TenantId(1),
            client_id: ClientId::new("c1"),
            user_id: Some("u1".into()),
            scope: ScopeSet::parse("read write").unwrap(),
            auth_time: Some(UnixTime(0)),
            issued_at: UnixTime(0),
            expires_at: UnixTime(1000),
            spent: false,
        };
        assert_eq!(
            check_refresh(&record, &c, None, UnixTime(10))
                .unwrap()
                .to_string(),
            "read write"
        );
        assert_eq!(
            check_refresh(&record, &c, Some("read"), UnixTime(10))
                .unwrap()
                .to_string(),
            "read"
        );
        assert!(matches!(
            check_refresh(&record, &c, Some("read admin"), UnixTime(10)),
            Err(TokenError::InvalidScope(_))
        ));
        assert!(matches!(
            check_refresh(&record, &c, None, UnixTime(1000)),
            Err(TokenError::InvalidGrant(_))
        ));
        let mut no_refresh = c.clone();
        no_refresh.grant_types = vec![GrantType::AuthorizationCode];
        assert!(matches!(
            check_refresh(&record, &no_refresh, None, UnixTime(10)),
            Err(TokenError::UnauthorizedClient(_))
        ));
    }
}
