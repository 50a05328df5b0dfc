//! The PKG end to end: real `pkg-server` and `pkg-admin` processes on
//! 127.0.0.1, the library's client. Every test runs on SQLite, and also on
//! PostgreSQL when `IBEPHONE_TEST_POSTGRES` is set.

use crate::common;

use common::*;
use ibephone::ibe::{check_key, Period, PublicParams};
use ibephone::pkg_client::api::SecretString;
use ibephone::pkg_client::{KeyStore, PkgClient, PkgClientError, Unlock};

fn status_of(e: &PkgClientError) -> (u16, String) {
    match e {
        PkgClientError::Server { status, code, .. } => (*status, code.clone()),
        PkgClientError::Throttled { .. } => (429, "too_many_attempts".into()),
        other => panic!("unexpected error {other:?}"),
    }
}

/// The HTTP status of a login that must fail.
async fn refused_login(client: &PkgClient, user: &str, password: &str) -> u16 {
    status_of(&client.login(user, &password.into()).await.unwrap_err()).0
}

#[tokio::test]
async fn happy_path_login_keys_logout_audit_and_store() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, "").await;
        let server = pkg.start();
        let client = server.client();
        let params = client.params().await.unwrap();
        assert_eq!(params.domain(), DOMAIN);
        // The exported document is the served one.
        let exported = pkg.admin(&["params", "export"], "");
        let stderr = String::from_utf8_lossy(&exported.stderr);
        assert!(stderr.contains(&params.fingerprint_display()), "{stderr}");
        // The operator reads the short form the phone shows beside the
        // full one: the parameters' and the certificate's.
        let short = format!("(users compare: {})", params.fingerprint_short());
        assert!(stderr.contains(&short), "{stderr}");
        assert!(pkg.init_stdout.contains(&short), "{}", pkg.init_stdout);
        let cert_short = format!(
            "{}  (users compare: {})",
            hex::encode(server.fingerprint),
            ibephone::ibe::fingerprint::short(&server.fingerprint)
        );
        assert!(pkg.init_stdout.contains(&cert_short), "{}", pkg.init_stdout);
        assert_eq!(
            PublicParams::from_json(&String::from_utf8_lossy(&exported.stdout)).unwrap(),
            params
        );
        assert_eq!(client.health().await.unwrap().database, "ok");

        let session = client.login("alice", &ALICE_PW.into()).await.unwrap();
        assert_eq!(session.aor.as_str(), "sip:alice@atlanta.invalid");
        assert_eq!(session.expires_in, 900);
        let window = window();
        let keys = client.fetch_keys(&session, &params, &window).await.unwrap();
        assert_eq!(keys.len(), 3);
        for k in &keys {
            check_key(&params, k).unwrap();
            assert_eq!(k.identity().aor(), &session.aor);
        }
        client.logout(&session).await.unwrap();
        let e = client
            .fetch_keys(&session, &params, &window[..1])
            .await
            .unwrap_err();
        assert_eq!(status_of(&e), (401, "invalid_token".into()));

        // Audit: three issuances of alice from 127.0.0.1.
        let audit = pkg.admin_ok(&["audit", "--user", "alice"], "");
        let issued: Vec<&str> = audit.lines().filter(|l| l.ends_with("\tissued")).collect();
        assert_eq!(issued.len(), 3, "{audit}");
        assert!(issued
            .iter()
            .all(|l| l.contains("\t127.0.0.1\t") && l.contains("sip:alice@atlanta.invalid#")));
        assert_eq!(
            pkg.admin_ok(&["audit", "--user", "alice", "--since", "2999-01-01"], ""),
            ""
        );

        // Metrics.
        let (st, body, _) = raw(&server, "GET", "/metrics", &[], vec![]).await;
        assert_eq!(st, 200);
        assert!(body.contains("pkg_keys_issued_total 3"), "{body}");
        assert!(body.contains("pkg_logins_ok_total 1"), "{body}");
        assert!(
            body.contains("pkg_request_duration_seconds_bucket"),
            "{body}"
        );
        assert!(!body.contains("alice"));

        // Key store: keys survive a restart of the phone, encrypted at rest.
        let store_dir = pkg.path("phone");
        {
            let mut ks = KeyStore::open(&store_dir, Unlock::KeyFile).unwrap();
            ks.put_keys(&params, &keys).unwrap();
            ks.set_pkg_pin(server.fingerprint).unwrap();
        }
        let ks = KeyStore::open(&store_dir, Unlock::KeyFile).unwrap();
        assert_eq!(ks.keys().unwrap().len(), 3);
        assert_eq!(ks.pkg_pin(), Some(server.fingerprint));
        assert!(ks.keys_for(&window[0]).unwrap().is_some());
    }
}

#[tokio::test]
async fn wrong_password_unknown_user_and_disabled_user() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, "").await;
        let server = pkg.start();
        let wrong = post_json(
            &server,
            "/v1/login",
            None,
            login_body("alice", "not the password"),
        )
        .await;
        let unknown = post_json(
            &server,
            "/v1/login",
            None,
            login_body("mallory", "not the password"),
        )
        .await;
        assert_eq!(wrong.0, 401);
        // Indistinguishable: same status, same body.
        assert_eq!(wrong, unknown);
        assert_eq!(error_code(&wrong.1), "invalid_credentials");

        let client = server.client();
        let params = client.params().await.unwrap();
        let s = client.login("bob", &BOB_PW.into()).await.unwrap();
        pkg.admin_ok(&["user", "disable", "bob"], "");
        let e = client.login("bob", &BOB_PW.into()).await.unwrap_err();
        assert_eq!(status_of(&e), (403, "account_disabled".into()));
        // Disabling ended the session.
        let e = client
            .fetch_keys(&s, &params, &window()[..1])
            .await
            .unwrap_err();
        assert_eq!(status_of(&e).0, 401);
        let list = pkg.admin_ok(&["user", "list"], "");
        assert!(
            list.contains("bob\tsip:bob@atlanta.invalid\tdisabled"),
            "{list}"
        );
        pkg.admin_ok(&["user", "enable", "bob"], "");
        client.login("bob", &BOB_PW.into()).await.unwrap();
        // A new password ends sessions and replaces the old one.
        pkg.admin_ok(&["user", "passwd", "bob"], "bob new password\n");
        assert_eq!(refused_login(&client, "bob", BOB_PW).await, 401);
        client
            .login("bob", &"bob new password".into())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn keys_only_for_own_identity_and_window() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, "").await;
        let server = pkg.start();
        let client = server.client();
        let params = client.params().await.unwrap();
        let s = client.login("alice", &ALICE_PW.into()).await.unwrap();
        let auth = format!("Bearer {}", s.token.expose());
        let keys = |body: String| post_json(&server, "/v1/keys", Some(&auth), body);
        let cur = window()[0].to_string();

        // Another user's keys: 403, nothing issued, the attempt audited.
        let req = serde_json::json!({"periods": [cur], "aor": "sip:bob@atlanta.invalid"});
        let (st, body, _) = keys(req.to_string()).await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (403, "identity_not_allowed")
        );
        assert!(!body.contains("d_enc"));
        let audit = pkg.admin_ok(&["audit"], "");
        assert!(
            audit.contains(&format!(
                "alice\tsip:bob@atlanta.invalid#{cur}\t{cur}\t127.0.0.1\tdenied:identity"
            )),
            "{audit}"
        );
        assert!(!audit.contains("\tissued"), "{audit}");
        // Naming one's own AOR is fine.
        let req = serde_json::json!({"periods": [cur], "aor": "sip:alice@atlanta.invalid"});
        assert_eq!(keys(req.to_string()).await.0, 200);

        // Periods outside previous/current/next: 403 and audited.
        let far = Period::month("2031-01").unwrap();
        let e = client.fetch_keys(&s, &params, &[far]).await.unwrap_err();
        assert_eq!(status_of(&e), (403, "period_not_allowed".into()));
        assert!(pkg.admin_ok(&["audit"], "").contains("denied:period"));
        let two_back = window()[1].previous_month().unwrap();
        assert_eq!(
            status_of(
                &client
                    .fetch_keys(&s, &params, &[two_back])
                    .await
                    .unwrap_err()
            )
            .0,
            403
        );

        // Malformed requests: 400 with an error body.
        for body in [
            r#"{"periods": ["2026-13"]}"#.to_string(),
            r#"{"periods": []}"#.to_string(),
            format!(r#"{{"periods": ["{cur}", "{cur}"]}}"#),
            r#"{"periods": ["2026-01","2026-02","2026-03","2026-04"]}"#.to_string(),
            r#"{"periods": "#.to_string(),
            r#"["not", "an", "object"]"#.to_string(),
        ] {
            let (st, b, _) = keys(body.clone()).await;
            assert_eq!(st, 400, "{body} -> {b}");
            assert!(["bad_request", "bad_period"].contains(&error_code(&b).as_str()));
        }
        // Wrong content type.
        let (st, b, _) = raw(
            &server,
            "POST",
            "/v1/keys",
            &[("content-type", "text/plain"), ("authorization", &auth)],
            format!(r#"{{"periods":["{cur}"]}}"#).into_bytes(),
        )
        .await;
        assert_eq!((st, error_code(&b).as_str()), (400, "bad_request"));
        // Bodies over the limit (16 KiB): 413; a huge one may also be cut
        // off before the client finished sending it; the server lives on.
        let big = format!(
            r#"{{"user":"alice","password":"{}"}}"#,
            "x".repeat(20 * 1024)
        );
        let (st, b, _) = post_json(&server, "/v1/login", None, big).await;
        assert_eq!((st, error_code(&b).as_str()), (413, "too_large"));
        let huge = format!(r#"{{"user":"alice","password":"{}"}}"#, "x".repeat(8 << 20));
        let (st, b, _) = post_json(&server, "/v1/login", None, huge).await;
        assert!(st == 413 || st == 0, "{st} {b}");
        assert_eq!(client.health().await.unwrap().status, "ok");
        // No token, bogus token.
        let (st, b, _) = post_json(&server, "/v1/keys", None, "{}").await;
        assert_eq!((st, error_code(&b).as_str()), (401, "invalid_token"));
        let (st, _, _) = post_json(&server, "/v1/keys", Some("Bearer AAAA"), "{}").await;
        assert_eq!(st, 401);
        // Unknown path and untrusted domain: 404.
        assert_eq!(raw(&server, "GET", "/v2/nothing", &[], vec![]).await.0, 404);
        assert_eq!(
            status_of(&client.trusted_params("biloxi.invalid").await.unwrap_err()).0,
            404
        );
    }
}

#[tokio::test]
async fn throttling_kicks_in_and_lifts() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, &throttle(3, 1000, 2)).await;
        let server = pkg.start();
        let client = server.client();
        for _ in 0..3 {
            assert_eq!(refused_login(&client, "alice", "bad password").await, 401);
        }
        // Locked: even the right password gets 429 with Retry-After.
        match client.login("alice", &ALICE_PW.into()).await.unwrap_err() {
            PkgClientError::Throttled { retry_after_secs } => {
                assert!((1..=2).contains(&retry_after_secs))
            }
            other => panic!("{other:?}"),
        }
        let (st, b, retry) =
            post_json(&server, "/v1/login", None, login_body("alice", ALICE_PW)).await;
        assert_eq!((st, error_code(&b).as_str()), (429, "too_many_attempts"));
        assert!(retry.is_some());
        // Other users are not affected.
        client.login("bob", &BOB_PW.into()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
        client.login("alice", &ALICE_PW.into()).await.unwrap();
    }
}

#[tokio::test]
async fn per_address_throttling() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, &throttle(100, 4, 30)).await;
        let server = pkg.start();
        let client = server.client();
        for u in ["u1", "u2", "u3", "u4"] {
            assert_eq!(refused_login(&client, u, "bad password").await, 401);
        }
        assert_eq!(refused_login(&client, "alice", ALICE_PW).await, 429);
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, "[session]\nidle_secs = 1\nabsolute_secs = 60\n").await;
        let server = pkg.start();
        let client = server.client();
        let params = client.params().await.unwrap();
        let s = client.login("alice", &ALICE_PW.into()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let e = client
            .fetch_keys(&s, &params, &window()[..1])
            .await
            .unwrap_err();
        assert_eq!(status_of(&e), (401, "invalid_token".into()));
    }
}

#[tokio::test]
async fn pinned_fingerprint_mismatch_is_refused_and_tofu_records() {
    let pkg = Pkg::new(&None, "").await;
    let server = pkg.start();
    let mut wrong = server.fingerprint;
    wrong[0] ^= 1;
    let client = PkgClient::new(&server.url, Some(wrong)).unwrap();
    match client.params().await.unwrap_err() {
        PkgClientError::PinMismatch { presented, .. } => {
            assert_eq!(presented, hex::encode(server.fingerprint))
        }
        other => panic!("{other:?}"),
    }
    assert!(client.login("alice", &ALICE_PW.into()).await.is_err());
    let tofu = PkgClient::new(&server.url, None).unwrap();
    tofu.params().await.unwrap();
    assert_eq!(tofu.pinned_fingerprint(), Some(server.fingerprint));
}

#[tokio::test]
async fn restart_keeps_users_params_and_audit() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, "").await;
        let server = pkg.start();
        let client = server.client();
        let params = client.params().await.unwrap();
        let s = client.login("alice", &ALICE_PW.into()).await.unwrap();
        client
            .fetch_keys(&s, &params, &window()[..1])
            .await
            .unwrap();
        let fp = server.fingerprint;
        server.stop();
        let server = pkg.start();
        assert_eq!(server.fingerprint, fp, "same certificate");
        let client = server.client();
        assert_eq!(client.params().await.unwrap(), params);
        // Sessions are in the database too.
        let keys = client.fetch_keys(&s, &params, &window()).await.unwrap();
        assert_eq!(keys.len(), 3);
        client.login("alice", &ALICE_PW.into()).await.unwrap();
        let audit = pkg.admin_ok(&["audit"], "");
        assert_eq!(
            audit.lines().filter(|l| l.ends_with("\tissued")).count(),
            4,
            "{audit}"
        );
    }
}

#[tokio::test]
async fn federation_trust_add_list_remove() {
    let backend = None;
    let ours = Pkg::new(&backend, "").await;
    let theirs = Pkg::with_domain(&backend, "", "biloxi.invalid", false).await;
    let doc = theirs.path("biloxi.json");
    theirs.admin_ok(&["params", "export", "--out", doc.to_str().unwrap()], "");
    let their_params = PublicParams::from_json(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    // Without --yes the fingerprint is shown and a "no" refuses.
    let out = ours.admin(&["trust", "add", doc.to_str().unwrap()], "n\n");
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&their_params.fingerprint_display()));
    let out = ours.admin_ok(&["trust", "add", doc.to_str().unwrap()], "yes\n");
    assert!(out.contains("trusted biloxi.invalid"));
    assert!(ours.admin_ok(&["trust", "list"], "").contains(&format!(
        "biloxi.invalid\t{}",
        their_params.fingerprint_display()
    )));
    let server = ours.start();
    let got = server
        .client()
        .trusted_params("biloxi.invalid")
        .await
        .unwrap();
    assert_eq!(got, their_params);
    ours.admin_ok(&["trust", "remove", "biloxi.invalid"], "");
    assert_eq!(
        ours.admin_code(&["trust", "remove", "biloxi.invalid"], ""),
        3
    );
    assert!(server
        .client()
        .trusted_params("biloxi.invalid")
        .await
        .is_err());
}

#[tokio::test]
async fn admin_errors_have_exit_codes_and_extract_imports() {
    let pkg = Pkg::new(&None, "").await;
    let cur = window()[0].to_string();
    assert_eq!(
        pkg.admin_code(&["user", "add", "alice"], "whatever pw\n"),
        4
    );
    assert_eq!(pkg.admin_code(&["user", "disable", "nobody"], ""), 3);
    assert_eq!(
        pkg.admin_code(&["user", "add", "bad name"], "whatever pw\n"),
        5
    );
    assert_eq!(pkg.admin_code(&["user", "add", "carol"], "short\n"), 5);
    assert_eq!(pkg.admin_code(&["user", "add", "carol"], ""), 5);
    assert_eq!(pkg.admin_code(&["init", "--domain", "x.invalid"], ""), 4);
    let out = pkg.path("alice.keys");
    let o = out.to_str().unwrap();
    assert_eq!(
        pkg.admin_code(
            &["extract", "tel:+1234", "--period", &cur, "--out", o],
            "passphrase!\n"
        ),
        5
    );
    assert_eq!(
        pkg.admin_code(
            &[
                "extract",
                "sip:alice@atlanta.invalid",
                "--period",
                "2026-13",
                "--out",
                o
            ],
            "passphrase!\n"
        ),
        5
    );
    assert_eq!(
        pkg.admin_code(
            &[
                "extract",
                "sip:alice@elsewhere.invalid",
                "--period",
                &cur,
                "--out",
                o
            ],
            "passphrase!\n"
        ),
        5
    );
    assert_eq!(
        pkg.admin_code(
            &[
                "extract",
                "sip:zed@atlanta.invalid",
                "--period",
                &cur,
                "--out",
                o
            ],
            "passphrase!\n"
        ),
        3
    );
    assert_eq!(
        pkg.admin_code(&["trust", "add", "/nonexistent/file.json"], ""),
        6
    );
    assert_eq!(
        pkg.admin_code(&["audit", "--since", "yesterday-ish"], ""),
        5
    );
    assert_eq!(pkg.admin_code(&["audit", "--user", "nobody"], ""), 3);
    assert_eq!(pkg.admin_code(&["bogus-command"], ""), 2);

    // A PKG never initialized.
    let empty = tempfile::tempdir().unwrap();
    let cfg = empty.path().join("pkg.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", empty.path().display())).unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_pkg-admin"))
        .args(["--config", cfg.to_str().unwrap(), "user", "list"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(8));

    // Offline extract: 0600 file, imported by the phone, audited.
    pkg.admin_ok(
        &[
            "extract",
            "sip:alice@atlanta.invalid",
            "--period",
            &cur,
            "--out",
            o,
        ],
        "passphrase!\n",
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        pkg.admin_code(
            &[
                "extract",
                "sip:alice@atlanta.invalid",
                "--period",
                &cur,
                "--out",
                o
            ],
            "passphrase!\n"
        ),
        4
    );
    let mut ks = KeyStore::open(&pkg.path("phone"), Unlock::KeyFile).unwrap();
    assert!(ks
        .import_extract_file(&out, &SecretString::from("wrong one"))
        .is_err());
    assert_eq!(
        ks.import_extract_file(&out, &SecretString::from("passphrase!"))
            .unwrap(),
        1
    );
    let k = ks.keys_for(&Period::month(&cur).unwrap()).unwrap().unwrap();
    assert_eq!(k.identity().aor().as_str(), "sip:alice@atlanta.invalid");
    assert!(pkg
        .admin_ok(&["audit"], "")
        .contains("\toffline\tissued:extract"));
}

#[tokio::test]
async fn digest_ha1_for_the_registrar() {
    use pkg_server::password::DigestAlgorithm;
    let pkg = Pkg::new(&None, "").await;
    let config = pkg_server::config::Config::load(&pkg.config).unwrap();
    let store = pkg_server::store::Store::connect(&config.database_url(), 2)
        .await
        .unwrap();
    let vault = pkg_server::vault::Vault::unlock(&config, &store)
        .await
        .unwrap();
    let store = store.with_ha1_key(vault.ha1_key());
    use md5::Digest as _;
    let a1 = format!("alice:{DOMAIN}:{ALICE_PW}");
    for (alg, want) in [
        (DigestAlgorithm::Md5, hex::encode(md5::Md5::digest(&a1))),
        (
            DigestAlgorithm::Sha256,
            hex::encode(sha2::Sha256::digest(&a1)),
        ),
    ] {
        let ha1 = store.digest_ha1("alice", alg).await.unwrap().unwrap();
        assert_eq!(ha1.as_str(), want);
    }
    assert!(store
        .digest_ha1("nobody", DigestAlgorithm::Md5)
        .await
        .unwrap()
        .is_none());
    assert!(store.user_enabled("alice").await.unwrap());
    pkg.admin_ok(&["user", "disable", "alice"], "");
    assert!(!store.user_enabled("alice").await.unwrap());
    assert!(store
        .digest_ha1("alice", DigestAlgorithm::Md5)
        .await
        .unwrap()
        .is_none());
    // Sealed in the database: the HA1 text is not there in clear.
    let mut db = std::fs::read(pkg.path("pkg.db")).unwrap();
    db.extend(std::fs::read(pkg.path("pkg.db-wal")).unwrap_or_default());
    let phc_prefix = b"$argon2id$v=19$m=1024";
    assert!(
        db.windows(phc_prefix.len()).any(|w| w == phc_prefix),
        "the scan sees the users table"
    );
    let needle = hex::encode(md5::Md5::digest(format!("alice:{DOMAIN}:{ALICE_PW}")));
    assert!(!db.windows(needle.len()).any(|w| w == needle.as_bytes()));
}

#[tokio::test]
async fn scale_out_two_servers_share_sessions_and_throttling() {
    // Two processes on one database: PostgreSQL when available (the
    // deployment this is for), else the same SQLite file.
    for backend in backends() {
        let pkg = Pkg::new(&backend, &throttle(2, 1000, 60)).await;
        let a = pkg.start();
        let b = pkg.start();
        assert_ne!(a.url, b.url);
        let (ca, cb) = (a.client(), b.client());
        let params = cb.params().await.unwrap();
        assert_eq!(ca.params().await.unwrap(), params);
        let s = ca.login("alice", &ALICE_PW.into()).await.unwrap();
        assert_eq!(
            cb.fetch_keys(&s, &params, &window()).await.unwrap().len(),
            3
        );
        cb.logout(&s).await.unwrap();
        assert_eq!(
            status_of(
                &ca.fetch_keys(&s, &params, &window()[..1])
                    .await
                    .unwrap_err()
            )
            .0,
            401
        );
        // Failures on one server lock the user out on the other.
        for _ in 0..2 {
            let _ = ca.login("bob", &"bad password".into()).await;
        }
        assert_eq!(refused_login(&cb, "bob", BOB_PW).await, 429);
    }
}

/// The HA1 of `user`'s digest password `pw` in the test domain (MD5).
fn md5_ha1(user: &str, pw: &str) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(format!("{user}:{DOMAIN}:{pw}")))
}

#[tokio::test]
async fn device_sip_credentials_issue_replace_revoke() {
    let pkg = Pkg::new(&None, "").await;
    let server = pkg.start();
    let client = server.client();
    let session = client.login("alice", &ALICE_PW.into()).await.unwrap();
    let laptop = client.sip_credentials(&session, "laptop").await.unwrap();
    assert_eq!(laptop.username, "alice");
    assert_eq!(laptop.device, "laptop");
    // A fresh random secret each time; the same device's new one replaces it.
    let again = client.sip_credentials(&session, "laptop").await.unwrap();
    assert_ne!(again.password, laptop.password);
    let phone = client.sip_credentials(&session, "phone").await.unwrap();
    let listed = pkg.admin_ok(&["user", "devices", "alice"], "");
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(names, ["laptop", "phone"], "{listed}");
    assert!(!listed.contains(phone.password.expose()));
    assert_eq!(pkg.admin_ok(&["user", "devices", "bob"], ""), "");

    // The registrar's view: one HA1 pair per live device, only the latest
    // laptop secret; the secrets themselves are nowhere in the database.
    let config = pkg_server::config::Config::load(&pkg.config).unwrap();
    let store = pkg_server::store::Store::connect(&config.database_url(), 2)
        .await
        .unwrap();
    let vault = pkg_server::vault::Vault::unlock(&config, &store)
        .await
        .unwrap();
    let store = store.with_ha1_key(vault.ha1_key());
    let ha1s: Vec<String> = store
        .sip_device_ha1s("alice")
        .await
        .unwrap()
        .iter()
        .map(|d| d.ha1_md5.to_string())
        .collect();
    assert_eq!(
        ha1s,
        [
            md5_ha1("alice", again.password.expose()),
            md5_ha1("alice", phone.password.expose())
        ]
    );
    let mut db = std::fs::read(pkg.path("pkg.db")).unwrap();
    db.extend(std::fs::read(pkg.path("pkg.db-wal")).unwrap_or_default());
    for needle in [
        phone.password.expose().to_string(),
        md5_ha1("alice", phone.password.expose()),
    ] {
        assert!(!db.windows(needle.len()).any(|w| w == needle.as_bytes()));
    }

    // Revoking one device leaves the other.
    pkg.admin_ok(&["user", "devices", "alice", "--revoke", "phone"], "");
    let left = pkg.admin_ok(&["user", "devices", "alice"], "");
    assert!(
        left.starts_with("laptop\t") && !left.contains("phone"),
        "{left}"
    );
    assert_eq!(
        pkg.admin_code(&["user", "devices", "alice", "--revoke", "phone"], ""),
        3
    );
    assert_eq!(pkg.admin_code(&["user", "devices", "nobody"], ""), 3);
    // A password change revokes them all (and ends the session).
    pkg.admin_ok(
        &["user", "passwd", "alice"],
        "alice new secret\nalice new secret\n",
    );
    assert_eq!(pkg.admin_ok(&["user", "devices", "alice"], ""), "");
    assert!(store.sip_device_ha1s("alice").await.unwrap().is_empty());
    let e = client
        .sip_credentials(&session, "laptop")
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), (401, "invalid_token".into()));
    // So does disabling the account.
    let s = client.login("bob", &BOB_PW.into()).await.unwrap();
    client.sip_credentials(&s, "desk").await.unwrap();
    pkg.admin_ok(&["user", "disable", "bob"], "");
    assert_eq!(pkg.admin_ok(&["user", "devices", "bob"], ""), "");
    server.stop();
}

#[tokio::test]
async fn sip_credential_requests_are_checked() {
    let pkg = Pkg::new(&None, "").await;
    let server = pkg.start();
    let client = server.client();
    let session = client.login("alice", &ALICE_PW.into()).await.unwrap();
    // No token, a made-up token: 401.
    let body = br#"{"device":"laptop"}"#.to_vec();
    let (st, b, _) = post_json(&server, "/v1/sip-credentials", None, body.clone()).await;
    assert_eq!((st, error_code(&b).as_str()), (401, "invalid_token"));
    let (st, _, _) = post_json(&server, "/v1/sip-credentials", Some("Bearer made-up"), body).await;
    assert_eq!(st, 401);
    // Device names outside the alphabet or too long: 400 bad_device.
    let token = format!("Bearer {}", session.token.expose());
    for bad in ["", "a b", "x@y", "a:b", &"d".repeat(65)] {
        let body = serde_json::to_vec(&serde_json::json!({ "device": bad })).unwrap();
        let (st, b, _) = post_json(&server, "/v1/sip-credentials", Some(&token), body).await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (400, "bad_device"),
            "{bad:?}"
        );
    }
    let (st, _, _) = post_json(&server, "/v1/sip-credentials", Some(&token), b"{}".to_vec()).await;
    assert_eq!(st, 400);
    // At most 16 devices: the 17th new one is refused, a known one renewed.
    for i in 0..16 {
        client
            .sip_credentials(&session, &format!("dev{i}"))
            .await
            .unwrap();
    }
    let e = client.sip_credentials(&session, "dev16").await.unwrap_err();
    assert_eq!(status_of(&e), (409, "too_many_devices".into()));
    client.sip_credentials(&session, "dev3").await.unwrap();
    server.stop();
}

#[tokio::test]
async fn turn_credentials_rest_form_for_logged_in_users_only() {
    use base64::Engine;
    use hmac::Mac;
    let pkg = Pkg::new(&None, "[turn]\nlisten = \"127.0.0.1:0\"\nttl_secs = 600\n").await;
    let server = pkg.start();
    let relay = server.turn.expect("embedded relay");
    // No session, a made-up token, a logged-out token: 401.
    for auth in [None, Some("Bearer bm90IGEgdG9rZW4")] {
        let (st, body, _) = post_json(&server, "/v1/turn-credentials", auth, "").await;
        assert_eq!((st, error_code(&body).as_str()), (401, "invalid_token"));
    }
    let client = server.client();
    let s = client.login("alice", &ALICE_PW.into()).await.unwrap();
    let before = pkg_server::http::now_unix() as u64;
    let t = client.turn_credentials(&s).await.unwrap();
    let after = pkg_server::http::now_unix() as u64;
    // username = "<now + ttl>:alice"
    let (expiry, user) = t.username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert_eq!(user, "alice");
    assert!((before + 600..=after + 600).contains(&expiry), "{expiry}");
    // password = base64(HMAC-SHA1(secret file, username)), as coturn computes it.
    let path = pkg.path("turn-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(&path).unwrap();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.trim().as_bytes()).unwrap();
    mac.update(t.username.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(t.password.expose(), want);
    // The raw answer: ttl and the embedded relay's URIs.
    let token = format!("Bearer {}", s.token.expose());
    let (st, body, _) = post_json(&server, "/v1/turn-credentials", Some(&token), "").await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ttl"], 600);
    let uris: Vec<&str> = v["uris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            format!("turn:{relay}?transport=udp"),
            format!("turn:{relay}?transport=tcp")
        ]
    );
    // Never logged, counted in metrics.
    let (_, metrics, _) = raw(&server, "GET", "/metrics", &[], vec![]).await;
    assert!(
        metrics.contains("pkg_turn_credentials_issued_total 2"),
        "{metrics}"
    );
    // After logout, and for a disabled account, none.
    client.logout(&s).await.unwrap();
    let e = client.turn_credentials(&s).await.unwrap_err();
    assert_eq!(status_of(&e), (401, "invalid_token".into()));
    let s = client.login("bob", &BOB_PW.into()).await.unwrap();
    pkg.admin_ok(&["user", "disable", "bob"], "");
    let e = client.turn_credentials(&s).await.unwrap_err();
    assert_eq!(status_of(&e).0, 401);
    // The secret survives a restart: credentials stay valid.
    drop(server);
    let server = pkg.start();
    let s = server
        .client()
        .login("alice", &ALICE_PW.into())
        .await
        .unwrap();
    let t2 = server.client().turn_credentials(&s).await.unwrap();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.trim().as_bytes()).unwrap();
    mac.update(t2.username.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(t2.password.expose(), want);
}

#[tokio::test]
async fn turn_credentials_for_an_external_relay_and_none_without_turn() {
    let pkg = Pkg::new(
        &None,
        "[turn]\nembedded = false\nuris = [\"turn:turn.atlanta.invalid:3478?transport=udp\", \
         \"turns:turn.atlanta.invalid:5349?transport=tcp\"]\n",
    )
    .await;
    let server = pkg.start();
    assert!(server.turn.is_none(), "no embedded relay");
    let client = server.client();
    let s = client.login("alice", &ALICE_PW.into()).await.unwrap();
    let t = client.turn_credentials(&s).await.unwrap();
    let hosts: Vec<(String, u16)> = t.uris.iter().map(|u| (u.host.clone(), u.port)).collect();
    assert_eq!(
        hosts,
        [
            ("turn.atlanta.invalid".to_string(), 3478),
            ("turn.atlanta.invalid".to_string(), 5349)
        ]
    );
    // A provider without [turn]: the typed error, not a protocol failure.
    let plain = Pkg::new(&None, "").await;
    let server = plain.start();
    assert!(server.turn.is_none());
    let client = server.client();
    let s = client.login("alice", &ALICE_PW.into()).await.unwrap();
    assert!(matches!(
        client.turn_credentials(&s).await.unwrap_err(),
        PkgClientError::NotOffered(_)
    ));
}

/// The code of an `otpauth://` URI at Unix time `t`.
fn totp_code(uri: &str, t: u64) -> String {
    totp_rs::TOTP::from_url(uri).unwrap().generate(t)
}

fn now_secs() -> u64 {
    pkg_server::http::now_unix() as u64
}

#[tokio::test]
async fn second_factor_totp_at_login() {
    for backend in backends() {
        let pkg = Pkg::new(&backend, &throttle(6, 1000, 60)).await;
        let out = pkg.admin_ok(&["user", "otp", "alice"], "");
        let uri = out.lines().next().unwrap().to_string();
        assert!(
            uri.starts_with("otpauth://totp/atlanta.invalid:alice?secret="),
            "{out}"
        );
        assert!(uri.ends_with("&issuer=atlanta.invalid"), "{uri}");
        // A QR code for the terminal follows the URI.
        assert!(out.lines().count() > 20 && out.contains('▀'), "{out}");
        assert_eq!(pkg.admin_code(&["user", "otp", "mallory"], ""), 3);
        let server = pkg.start();
        let client = server.client();

        // The password alone: 401 otp_required, and only after a right one.
        let e = client.login("alice", &ALICE_PW.into()).await.unwrap_err();
        assert!(e.is_otp_required(), "{e:?}");
        assert_eq!(status_of(&e), (401, "otp_required".into()));
        let wrong_pw = post_json(
            &server,
            "/v1/login",
            None,
            login_body("alice", "not the password"),
        )
        .await;
        assert_eq!(
            (wrong_pw.0, error_code(&wrong_pw.1).as_str()),
            (401, "invalid_credentials")
        );
        // A wrong password with the right code is still refused.
        let code = totp_code(&uri, now_secs());
        let e = client
            .login_with_otp(
                "alice",
                &"not the password".into(),
                Some(&code.as_str().into()),
            )
            .await
            .unwrap_err();
        assert_eq!(status_of(&e), (401, "invalid_credentials".into()));
        // A wrong code.
        let wrong = if code == "000000" { "000001" } else { "000000" };
        let e = client
            .login_with_otp("alice", &ALICE_PW.into(), Some(&wrong.into()))
            .await
            .unwrap_err();
        assert_eq!(status_of(&e), (401, "invalid_credentials".into()));
        // The right code: in; the same code again: refused (single use).
        let s = client
            .login_with_otp("alice", &ALICE_PW.into(), Some(&code.as_str().into()))
            .await
            .unwrap();
        assert_eq!(s.aor.as_str(), "sip:alice@atlanta.invalid");
        let e = client
            .login_with_otp("alice", &ALICE_PW.into(), Some(&code.as_str().into()))
            .await
            .unwrap_err();
        assert_eq!(status_of(&e), (401, "invalid_credentials".into()));
        // One step of drift: the next step's code is accepted now.
        let next = totp_code(&uri, now_secs() + 30);
        client
            .login_with_otp("alice", &ALICE_PW.into(), Some(&next.as_str().into()))
            .await
            .unwrap();
        // Two steps ahead is too far.
        let far = totp_code(&uri, now_secs() + 90);
        let e = client
            .login_with_otp("alice", &ALICE_PW.into(), Some(&far.as_str().into()))
            .await
            .unwrap_err();
        assert_eq!(status_of(&e).0, 401);
        // Every refusal counts for throttling, otp_required too: the one
        // above and five more reach the limit of 6 (the good logins before
        // reset the count), and then even a right code is throttled.
        for _ in 0..5 {
            let e = client.login("alice", &ALICE_PW.into()).await.unwrap_err();
            assert!(e.is_otp_required(), "{e:?}");
        }
        let good = totp_code(&uri, now_secs() + 30);
        match client
            .login_with_otp("alice", &ALICE_PW.into(), Some(&good.as_str().into()))
            .await
            .unwrap_err()
        {
            PkgClientError::Throttled { .. } => {}
            other => panic!("{other:?}"),
        }
        // bob has no second factor; a code he sends is ignored.
        client
            .login_with_otp("bob", &BOB_PW.into(), Some(&"123456".into()))
            .await
            .unwrap();
        // Re-enrolment changes the seed; --disable removes the factor.
        pkg.admin_ok(&["user", "otp", "bob"], "");
        assert!(client
            .login("bob", &BOB_PW.into())
            .await
            .unwrap_err()
            .is_otp_required());
        let off = pkg.admin_ok(&["user", "otp", "bob", "--disable"], "");
        assert!(off.contains("removed"), "{off}");
        client.login("bob", &BOB_PW.into()).await.unwrap();
        // The seed is sealed at rest: the database does not hold it.
        let secret = uri
            .split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let seed = totp_rs::Secret::Encoded(secret.into()).to_bytes().unwrap();
        assert_eq!(seed.len(), 20);
        if backend.is_none() {
            let mut db = std::fs::read(pkg.path("pkg.db")).unwrap();
            db.extend(std::fs::read(pkg.path("pkg.db-wal")).unwrap_or_default());
            assert!(!db.windows(seed.len()).any(|w| w == &seed[..]));
        }
    }
}

#[tokio::test]
async fn agent_gets_its_one_time_code_from_otp_command() {
    use ibephone::agent::config::PkgSettings;
    use ibephone::agent::keys::{from_pkg, KeyError, Origin};
    let pkg = Pkg::new(&None, "").await;
    let uri = pkg.admin_ok(&["user", "otp", "alice"], "");
    let uri = uri.lines().next().unwrap().to_string();
    let server = pkg.start();
    let aor = ibephone::ibe::Aor::parse("sip:alice@atlanta.invalid").unwrap();
    let settings = |otp_command: Option<Vec<String>>| PkgSettings {
        discover: false,
        url: server.url.clone(),
        fingerprint: Some(server.fingerprint),
        store: pkg.path("agent-store"),
        user: "alice".into(),
        otp_command,
    };
    let pw: SecretString = ALICE_PW.into();
    // No command: a sentence saying what to configure, no keys.
    let e = from_pkg(&settings(None), &aor, &pw, now_secs())
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::Otp { .. }), "{e:?}");
    assert!(e.to_string().contains("otp_command"), "{e}");
    // A command that prints no code.
    let e = from_pkg(
        &settings(Some(vec!["echo".into(), "not a code".into()])),
        &aor,
        &pw,
        now_secs(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("6 to 8 digits"), "{e}");
    let e = from_pkg(&settings(Some(vec!["false".into()])), &aor, &pw, now_secs())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("otp_command failed"), "{e}");
    // A command printing the current code (an authenticator's CLI would).
    let code = totp_code(&uri, now_secs());
    let p = from_pkg(
        &settings(Some(vec!["echo".into(), code])),
        &aor,
        &pw,
        now_secs(),
    )
    .await
    .unwrap();
    assert_eq!(p.origin, Origin::Pkg);
    assert_eq!(p.keys.len(), 3);
}

/// Renewal never swaps the parameters the user confirmed: a PKG at the
/// configured place (its certificate pinned) serving other public
/// parameters (another master secret) gets a refusal naming both
/// fingerprints, and the store keeps the old parameters and keys.
#[tokio::test]
async fn renewal_refuses_parameters_other_than_the_confirmed_ones() {
    use ibephone::agent::config::PkgSettings;
    use ibephone::agent::keys::{from_pkg, KeyError, Origin};
    let first = Pkg::new(&None, "").await;
    let other = Pkg::new(&None, "").await;
    let (a, b) = (first.start(), other.start());
    let aor = ibephone::ibe::Aor::parse("sip:alice@atlanta.invalid").unwrap();
    let store = first.path("agent-store");
    let settings = |server: &Server| PkgSettings {
        discover: false,
        url: server.url.clone(),
        fingerprint: Some(server.fingerprint),
        store: store.clone(),
        user: "alice".into(),
        otp_command: None,
    };
    let pw: SecretString = ALICE_PW.into();
    let p = from_pkg(&settings(&a), &aor, &pw, now_secs())
        .await
        .unwrap();
    assert_eq!(p.origin, Origin::Pkg);
    let confirmed = p.params.fingerprint();

    let e = from_pkg(&settings(&b), &aor, &pw, now_secs())
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::ParamsChanged { .. }), "{e:?}");
    assert!(e.to_string().contains("other public parameters"), "{e}");
    let kept = KeyStore::open(&store, Unlock::KeyFile).unwrap();
    assert_eq!(kept.params().unwrap().unwrap().fingerprint(), confirmed);
    assert_eq!(kept.keys().unwrap().len(), p.keys.len());

    // The confirmed provider still renews.
    let again = from_pkg(&settings(&a), &aor, &pw, now_secs())
        .await
        .unwrap();
    assert_eq!(again.params.fingerprint(), confirmed);
}
