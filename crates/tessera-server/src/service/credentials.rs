//! Checking a resource owner's username and password, for the login form and
//! the password grant alike, with brute-force throttling.

use std::net::IpAddr;

use tessera_core::secret::password;
use tessera_core::throttle;
use tessera_core::{Tenant, UnixTime, User};

use super::ServiceError;
use crate::AppState;

/// The outcome of presenting a username and password.
#[derive(Debug)]
pub enum Verdict {
    Verified(User),
    /// Wrong password or unknown user: the same answer, after the same work.
    Rejected,
    /// Too many recent failures from this address (for this user or overall);
    /// nothing was checked and nothing counted.
    Throttled,
}

/// Verifies `username`/`password` in `tenant` for a client at `address`.
pub async fn check_password(
    state: &AppState,
    tenant: &Tenant,
    username: &str,
    password_text: &str,
    address: Option<IpAddr>,
    now: UnixTime,
) -> Result<Verdict, ServiceError> {
    let address = address.map_or_else(|| "unknown".to_owned(), throttle::address_group);
    let user_key = format!("user:{username}@{address}");
    let address_key = format!("address:{address}");
    for key in [&user_key, &address_key] {
        if state
            .store
            .locked_until(tenant.id, key, now)
            .await?
            .is_some()
        {
            return Ok(Verdict::Throttled);
        }
    }

    let user = state.store.user_by_username(tenant.id, username).await?;
    // An unknown user costs the same Argon2id verification as a known one.
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::decoy_hash().to_owned());
    let password_text = password_text.to_owned();
    let verified = {
        let _permit = state
            .password_checks
            .acquire()
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || password::verify(&password_text, &stored))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
    };
    if let (Some(user), true) = (user, verified) {
        state.store.clear_failures(tenant.id, &user_key).await?;
        return Ok(Verdict::Verified(user));
    }

    let policy = state.throttle;
    let window_start = UnixTime(now.0 - policy.window);
    for (key, limit) in [
        (&user_key, policy.user_failures),
        (&address_key, policy.address_failures),
    ] {
        let failures = state
            .store
            .record_failure(tenant.id, key, now, window_start)
            .await?;
        if let Some(seconds) = policy.lockout(failures, limit) {
            tracing::warn!(tenant = %tenant.name, key = %key, failures, seconds, "password attempts throttled");
            state
                .store
                .lock_out(tenant.id, key, now.plus_seconds(seconds))
                .await?;
        }
    }
    Ok(Verdict::Rejected)
}
