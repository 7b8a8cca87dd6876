//! Malformed requests get clean 4xx OAuth errors: never a 5xx, a panic or a hang.

use std::time::Duration;

use serde_json::Value;
use tessera_core::AuthMethod;
use tessera_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn oauth_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn malformed_token_requests() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let url = app.token_url("acme");
    let secret = client.secret.as_deref();
    let post = || app.http.post(&url).basic_auth(&client.id, secret);

    // JSON instead of a form.
    let json = post()
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(json).await, (400, "invalid_request".into()));

    // A 1 MiB body.
    let big = format!("grant_type=client_credentials&pad={}", "a".repeat(1 << 20));
    let big = post()
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, error) = oauth_error(big).await;
    assert!(status == 400 || status == 413, "{status}");
    assert_eq!(error, "invalid_request");

    // Repeated parameter (RFC 6749 §3.2).
    let repeated = post()
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=read&scope=write")
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(repeated).await, (400, "invalid_request".into()));

    // Not UTF-8.
    let not_utf8 = post()
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"grant_type=client_credentials&scope=%FF%FE".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(not_utf8).await, (400, "invalid_request".into()));

    // Wrong method.
    let get = app.http.get(&url).send().await.unwrap();
    assert_eq!(oauth_error(get).await, (405, "invalid_request".into()));

    // Unknown endpoint.
    let nowhere = app
        .http
        .get(format!("{}/nowhere", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(nowhere).await.0, 404);

    // After all that, the server still answers properly.
    let ok = app
        .token_basic("acme", &client, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(ok.status(), 200);
}

/// Sends raw bytes and returns the status line of the answer.
async fn raw_request(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not answer in time");
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn lying_content_length_and_bad_host_get_4xx() {
    let app = spawn_app_with(ServerConfig {
        request_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .await;
    app.create_tenant("acme").await;
    let address = app.base_url.trim_start_matches("http://").to_owned();

    // Content-Length promises more than is sent: 408 after the request timeout.
    let lying = b"POST /t/acme/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=client_credentials";
    let status = raw_request(&address, lying).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    // It says why, as a JSON error.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(lying).await.unwrap();
    let mut answer = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains(r#""error":"invalid_request""#), "{answer}");

    // A malformed Host header: URLs never come from it, so it changes nothing.
    let bad_host = b"GET /t/acme/jwks HTTP/1.1\r\nHost: [::bad\r\n\r\n";
    let status = raw_request(&address, bad_host).await;
    assert!(
        status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 400"),
        "{status}"
    );
    let evil_host = b"GET /.well-known/oauth-authorization-server/t/acme HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(evil_host).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("evil.example"),
        "issuer built from the Host header"
    );

    // Garbage instead of HTTP.
    let status = raw_request(&address, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 4"),
        "{status}"
    );
}

#[tokio::test]
async fn slow_clients_do_not_starve_others() {
    let app = spawn_app_with(ServerConfig {
        header_read_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .await;
    app.create_tenant("acme").await;
    let address = app.base_url.trim_start_matches("http://").to_owned();
    // Fifty connections that send half a request line and stall.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /healthz HT").await.unwrap();
        stalled.push(stream);
    }
    let ok = app
        .http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The server drops them once the header timeout has passed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for mut stream in stalled {
        let mut buffer = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await;
        if matches!(read, Ok(Ok(_)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "stalled connections are closed by the server");
}

#[tokio::test]
async fn malformed_browser_requests_get_pages_not_errors() {
    let (app, _) = acme(true).await;
    let issuer = app.issuer("acme");
    for path in ["login", "consent", "authorize"] {
        let url = format!("{issuer}/{path}");
        let json = app
            .http
            .post(&url)
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(json.status(), 400, "{path}");
        assert!(
            json.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let big = app
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={}", "a".repeat(1 << 20)))
            .send()
            .await
            .unwrap();
        // Larger than the server reads: its own page, not "malformed".
        assert_eq!(big.status(), 413, "{path}");
        assert!(big.headers().get("location").is_none());
        assert!(big.text().await.unwrap().contains("Request too large"));
        let not_utf8 = app
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(b"csrf=%FF".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(not_utf8.status(), 400, "{path}");
    }
    let wrong_method = app
        .http
        .delete(format!("{issuer}/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let not_utf8 = app
        .http
        .get(format!("{issuer}/authorize?client_id=%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_utf8.status(), 400);
}
