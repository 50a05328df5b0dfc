//! Fuzzes the digest header parsers (`WWW-Authenticate`/`Proxy-Authenticate`
//! challenges and `Authorization` credentials, RFC 8760): never panic;
//! a parsed challenge survives `to_header`, and the credentials our
//! answer to it carries parse and verify.
#![no_main]

use ibephone::sip::digest::{ha1, Challenge, Credentials, Password};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Challenge::best(text.split('\n'));
    if let Some(c) = Challenge::parse(&text) {
        let _ = Challenge::parse(&c.to_header());
        let password = Password::new("pw");
        let answer = c.answer(
            "alice",
            &password,
            "REGISTER",
            "sip:example.invalid",
            1,
            "c0ffee",
        );
        if let Some(creds) = Credentials::parse(&answer) {
            let h1 = ha1(creds.algorithm, "alice", &c.realm, &password);
            let _ = creds.verify(&h1, "REGISTER");
        }
    }
    if let Some(creds) = Credentials::parse(&text) {
        let _ = creds.verify("00", "INVITE");
    }
});
