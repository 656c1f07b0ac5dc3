//! The reference bot (`--reference-bot ADDR`): the least a Messenger bot backend can do
//! per message, to measure colloquy against on the same machine and load.
//!
//! It does the protocol work every backend must do and nothing more: the `GET`
//! handshake, the `POST`'s `X-Hub-Signature-256` check, JSON parsing, `200`, and one Send
//! API call per text message (bearer token, JSON body) with the thanks flow's text, sent
//! from the HTTP worker that took the POST. No store, no durability, no actors, no
//! ordering per user, no retries: a reply is sent once or lost. Its CPU per reply is a
//! floor, not a competitor (docs/performance.md, "The floor").
//!
//! It must not be used as a bot: it acknowledges before anything is stored.

use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::tracker::THANKS_TEXT;

/// Largest webhook body taken, as colloquy's default.
const MAX_BODY: usize = 1024 * 1024;

struct Reference {
    secret: Vec<u8>,
    verify_token: String,
    send_url: String,
    access_token: String,
    client: awc::Client,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    messaging: Vec<Messaging>,
}

#[derive(Deserialize)]
struct Messaging {
    sender: Option<Party>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Party {
    id: String,
}

#[derive(Deserialize)]
struct Message {
    text: Option<String>,
    #[serde(default)]
    is_echo: bool,
}

/// Serves the reference bot on `addr` until the process is stopped; replies go to
/// `graph` (a Graph API base URL such as `http://127.0.0.1:9999/v21.0`).
pub async fn serve(addr: SocketAddr, graph: &str, secret: &str) -> anyhow::Result<()> {
    let verify_token = std::env::var("MESSENGER_VERIFY_TOKEN").unwrap_or_default();
    let access_token = std::env::var("MESSENGER_ACCESS_TOKEN").unwrap_or_default();
    let send_url = format!("{}/me/messages", graph.trim_end_matches('/'));
    let secret = secret.as_bytes().to_vec();
    HttpServer::new(move || {
        app(Reference {
            secret: secret.clone(),
            verify_token: verify_token.clone(),
            send_url: send_url.clone(),
            access_token: access_token.clone(),
            client: awc::Client::default(),
        })
    })
    .bind(addr)
    .with_context(|| format!("cannot listen on {addr} for the reference bot"))?
    .run()
    .await
    .context("the reference bot stopped")
}

fn app(
    state: Reference,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(MAX_BODY))
        .route("/webhook", web::get().to(handshake))
        .route("/webhook", web::post().to(receive))
}

async fn handshake(req: HttpRequest, state: web::Data<Reference>) -> HttpResponse {
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string());
    let Ok(query) = query else {
        return HttpResponse::BadRequest().body("unreadable query");
    };
    let token_ok = query.get("hub.verify_token") == Some(&state.verify_token);
    match (
        query.get("hub.mode").map(String::as_str),
        query.get("hub.challenge"),
    ) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            HttpResponse::Ok().body(challenge.clone())
        }
        _ => HttpResponse::Forbidden().body("verification failed"),
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Reference>) -> HttpResponse {
    if !signed_by(&state.secret, &req, &body) {
        return HttpResponse::Forbidden().body("bad signature");
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
        return HttpResponse::BadRequest().body("unreadable JSON");
    };
    for messaging in envelope.entry.into_iter().flat_map(|entry| entry.messaging) {
        let answers = messaging
            .message
            .is_some_and(|message| message.text.is_some() && !message.is_echo);
        if let (true, Some(sender)) = (answers, messaging.sender) {
            actix_web::rt::spawn(send_thanks(state.clone(), sender.id));
        }
    }
    HttpResponse::Ok().body("EVENT_RECEIVED")
}

fn signed_by(secret: &[u8], req: &HttpRequest, body: &[u8]) -> bool {
    let Some(header) = req.headers().get("x-hub-signature-256") else {
        return false;
    };
    let Some(digest) = header.as_bytes().strip_prefix(b"sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(digest) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

async fn send_thanks(state: web::Data<Reference>, recipient: String) {
    let body = json!({
        "recipient": {"id": recipient},
        "messaging_type": "RESPONSE",
        "message": {"text": THANKS_TEXT},
    });
    let sent = state
        .client
        .post(&state.send_url)
        .bearer_auth(&state.access_token)
        .send_json(&body)
        .await;
    match sent {
        Ok(mut response) => {
            // Read the answer, as a real sender must, so the connection is reused.
            let _ = response.body().await;
        }
        Err(error) => eprintln!("reference bot: a reply was lost: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test;

    const SECRET: &[u8] = b"reference-secret";

    fn signature(body: &[u8]) -> String {
        crate::load::sign_sha256(SECRET, body)
    }

    /// A Graph API stand-in that hands each request body it gets to the test.
    fn graph() -> (
        String,
        tokio::sync::mpsc::UnboundedReceiver<(String, web::Bytes)>,
    ) {
        let (sent, received) = tokio::sync::mpsc::unbounded_channel();
        let server = HttpServer::new(move || {
            let sent = sent.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let _ = sent.send((auth, body));
                async { HttpResponse::Ok().json(json!({"recipient_id": "1", "message_id": "m"})) }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}/v21.0", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        (url, received)
    }

    #[actix_web::test]
    async fn a_signed_text_message_is_acknowledged_and_answered_once() {
        let (graph_url, mut sends) = graph();
        let state = Reference {
            secret: SECRET.to_vec(),
            verify_token: "token".into(),
            send_url: format!("{graph_url}/me/messages"),
            access_token: "page-token".into(),
            client: awc::Client::default(),
        };
        let bot = test::init_service(app(state)).await;
        let body = json!({"object": "page", "entry": [{"id": "1", "time": 1, "messaging": [
            {"sender": {"id": "user-1"}, "recipient": {"id": "1"}, "timestamp": 1,
             "message": {"mid": "m.1", "text": "hi"}},
            {"sender": {"id": "1"}, "recipient": {"id": "user-1"}, "timestamp": 2,
             "message": {"mid": "m.2", "text": "echo", "is_echo": true}}
        ]}]})
        .to_string();
        let signed = test::TestRequest::post()
            .uri("/webhook")
            .insert_header(("x-hub-signature-256", signature(body.as_bytes())))
            .set_payload(body.clone())
            .to_request();
        assert_eq!(test::call_service(&bot, signed).await.status(), 200);
        let (auth, sent) = sends.recv().await.unwrap();
        assert_eq!(auth, "Bearer page-token");
        let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent["recipient"]["id"], "user-1");
        assert_eq!(sent["message"]["text"], THANKS_TEXT);
        // The echo gets no answer.
        let more = tokio::time::timeout(std::time::Duration::from_millis(300), sends.recv()).await;
        assert!(more.is_err(), "an echo was answered");

        let forged = test::TestRequest::post()
            .uri("/webhook")
            .insert_header(("x-hub-signature-256", signature(b"another body")))
            .set_payload(body)
            .to_request();
        assert_eq!(test::call_service(&bot, forged).await.status(), 403);
    }
}
