//! `tests/vectors/tunnel-v1.json`: exactly what the generator writes; each
//! message re-seals to the same outer bytes from the randomness it lists,
//! and opens at the peer to the inner bytes.

use ibephone::tunnel::kat::{vector_random, vector_time, vector_tunnel};
use serde_json::Value;

const FILE: &str = include_str!("../vectors/tunnel-v1.json");

#[test]
fn file_is_current() {
    let text =
        serde_json::to_string_pretty(&ibephone::tunnel::kat::generate().unwrap()).unwrap() + "\n";
    assert!(
        text == FILE,
        "stale: cargo run --example gen-tunnel-vectors > tests/vectors/tunnel-v1.json"
    );
}

#[test]
fn every_message_reseals_and_opens_in_order() {
    let doc: Value = serde_json::from_str(FILE).unwrap();
    let (mut alice, _) = vector_tunnel("alice", Some(Box::new(vector_random("alice")))).unwrap();
    let (mut bob, _) = vector_tunnel("bob", Some(Box::new(vector_random("bob")))).unwrap();
    let messages = doc["messages"].as_array().unwrap();
    let names: Vec<&str> = messages
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "INVITE",
            "180 Ringing",
            "200 OK (INVITE)",
            "ACK",
            "BYE",
            "200 OK (BYE)"
        ]
    );
    for m in messages {
        let outer = hex::decode(m["outer_hex"].as_str().unwrap()).unwrap();
        let inner = hex::decode(m["inner_hex"].as_str().unwrap()).unwrap();
        let (sender, receiver) = if m["direction"] == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        assert_eq!(
            sender.seal(vector_time(), &inner).unwrap(),
            outer,
            "{}",
            m["name"]
        );
        let opened = receiver.open(vector_time(), &outer).unwrap();
        assert_eq!(opened.inner, inner, "{}", m["name"]);
        assert!(
            m["random"]["cek"].is_string(),
            "{} lists its CEK",
            m["name"]
        );
    }
    assert!(messages[0]["random"]["signature_k"].is_string());
    assert!(messages[0]["random"]["session_id"].is_string());
    assert!(messages[1]["random"]["signature_k"].is_string());
    // The 200 to the INVITE is signed too (a lost 180 must not leave the
    // caller unable to verify the callee); the BYE's messages are not.
    assert!(messages[2]["random"]["signature_k"].is_string());
    for later in &messages[3..] {
        assert!(
            later["random"].get("signature_k").is_none(),
            "{}",
            later["name"]
        );
    }
}
