//! The work of every token request that does not touch the database: the
//! client secret check, the form, the scopes and the JWT signature.
//! `cargo bench -p tessera-core`.

#![allow(clippy::unwrap_used)] // A benchmark fails loudly.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_core::form::FormParams;
use tessera_core::jwt::{AccessTokenClaims, Audience, SigningKey, generate_key};
use tessera_core::secret::{Purpose, SecretHasher};
use tessera_core::{ScopeSet, UnixTime};

fn hot_paths(c: &mut Criterion) {
    let hasher = SecretHasher::new(&[7u8; 32]);
    let secret = "xcmTfxpnfwpgjU0YK7NEbBVlxQM8cv8cO-vg5aNaUlU";
    let stored = hasher.hash(Purpose::ClientSecret, secret);
    c.bench_function(
        "client secret check (keyed hash + constant-time compare)",
        |b| {
            b.iter(|| {
                hasher
                    .hash(Purpose::ClientSecret, black_box(secret))
                    .matches(&stored)
            })
        },
    );

    let body = b"grant_type=client_credentials&scope=read%20write&client_id=Yzff8qy7pVj17PenrJ5ffA";
    c.bench_function("token request form parse", |b| {
        b.iter(|| {
            let form = FormParams::parse(black_box(body)).unwrap();
            form.single("grant_type").unwrap().is_some()
        })
    });

    let allowed = ScopeSet::parse("read write admin photos:read photos:write").unwrap();
    c.bench_function("scope parse + subset check", |b| {
        b.iter(|| {
            ScopeSet::parse(black_box("read write"))
                .unwrap()
                .is_subset_of(&allowed)
        })
    });

    let key = generate_key().unwrap();
    let signer = SigningKey::from_pkcs8(&key.kid, &key.private_pkcs8).unwrap();
    let audiences = vec!["https://api.example".to_owned()];
    c.bench_function("ES256 access token signature (aws-lc-rs)", |b| {
        b.iter(|| {
            let claims = AccessTokenClaims {
                iss: "http://127.0.0.1:8080/t/demo",
                sub: "Yzff8qy7pVj17PenrJ5ffA",
                aud: Audience::of(&audiences),
                exp: UnixTime(1_800_000_900),
                iat: UnixTime(1_800_000_000),
                jti: "Q2m9d7WkR0uYtq3hC5xJbA",
                client_id: "Yzff8qy7pVj17PenrJ5ffA",
                scope: "read",
                auth_time: None,
            };
            signer.sign(black_box(&claims)).unwrap()
        })
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
