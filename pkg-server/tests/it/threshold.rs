//! A threshold provider end to end (pkg-api.md "Threshold provider"):
//! three real `pkg-server` processes dealt 2-of-3 by `pkg-admin init
//! --threshold`, the phone's client logging in to each with its own
//! secret, checking and combining the key shares, and a call on the
//! combined keys.

use crate::agents;
use crate::common;

use agents::{id_now, recent_periods, register, registration_outcome, ConfigBuilder, Wait};
use common::*;
use ibephone::agent::headless::start;
use ibephone::agent::AgentEvent;
use ibephone::ibe::{check_key, PublicParams};
use ibephone::pkg_client::api::SecretString;
use ibephone::pkg_client::threshold::{
    fetch_threshold_keys, fetch_threshold_keys_and_device, fetch_threshold_keys_kept,
    fetch_threshold_keys_with_secrets, home_server, login_secret, login_secrets, DeviceRequest,
    ThresholdKeys,
};
use ibephone::pkg_client::PkgClientError;
use std::path::Path;

/// The configuration of one server listening on `port`, in its own
/// temporary directory.
fn server_dir(port: u16) -> Pkg {
    server_dir_at(port, port)
}

/// As [`server_dir`], listening on `listen` but known to the phone (its
/// `pkg_url` in the parameters) at `url_port`: a gate sits between.
fn server_dir_at(listen: u16, url_port: u16) -> Pkg {
    let port = url_port;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pkg.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{listen}\"\ndata_dir = \"{}\"\npkg_url = \"https://127.0.0.1:{port}\"\n\
             [argon2]\nm_kib = 1024\nt = 1\np = 1\n",
            dir.path().display()
        ),
    )
    .unwrap();
    Pkg {
        dir,
        config,
        init_stdout: String::new(),
    }
}

/// Deals 2-of-3 over three fresh server directories on `ports` (the
/// first directory may hold a certificate already) and adds alice and bob
/// to each.
fn deal(pkgs: &[Pkg]) {
    let out = deal_2_of_3(pkgs);
    assert!(out.contains("2-of-3 threshold PKG"), "{out}");
    for p in pkgs {
        p.admin_ok(&["user", "add", "alice"], &format!("{ALICE_PW}\n"));
        p.admin_ok(&["user", "add", "bob"], &format!("{BOB_PW}\n"));
    }
}

fn three() -> Vec<Pkg> {
    three_on(&[free_port(), free_port(), free_port()])
}

fn three_on(ports: &[u16]) -> Vec<Pkg> {
    let pkgs: Vec<Pkg> = ports.iter().map(|p| server_dir(*p)).collect();
    deal(&pkgs);
    pkgs
}

fn no_otp(_: u32) -> Option<SecretString> {
    None
}

async fn fetch(
    params: &PublicParams,
    user: &str,
    pw: &str,
) -> Result<ThresholdKeys, PkgClientError> {
    fetch_threshold_keys(params, user, &pw.into(), &no_otp, &recent_periods())
        .await
        .map(|(_, k)| k)
}

/// A phone's device credentials asked of server 1, the home server.
fn laptop_at(home: u32) -> DeviceRequest {
    DeviceRequest {
        home,
        device: "laptop".into(),
        turn: false,
    }
}

#[tokio::test]
async fn two_of_three_keys_combine_and_a_call_works() {
    let pkgs = three();
    // Server 1 is the home server: its embedded registrar is the domain's.
    let s1 = Server::start_with(&pkgs[0].config, &["--sip", "127.0.0.1:0"]);
    let s2 = pkgs[1].start();
    let s3 = pkgs[2].start();
    let params = s1.client().params().await.unwrap();
    // Every server serves the same parameters; they say "dealer": true.
    assert_eq!(s2.client().params().await.unwrap(), params);
    assert_eq!(s3.client().params().await.unwrap(), params);
    let t = params.threshold().unwrap();
    assert_eq!((t.t, t.servers.len(), t.dealer), (2, 3, true));
    assert_eq!(t.servers[2].tls_sha256, s3.fingerprint);
    let (_, json, _) = raw(&s1, "GET", "/v1/params", &[], vec![]).await;
    assert!(json.contains("\"dealer\": true"), "{json}");
    // The home server is found by its pin, else by its URL.
    assert_eq!(
        home_server(t, Some(s1.fingerprint), "https://elsewhere"),
        Some(1)
    );
    assert_eq!(
        home_server(t, Some([9; 32]), &format!("{}/", s1.url)),
        Some(1)
    );
    assert_eq!(home_server(t, Some([9; 32]), "https://elsewhere"), None);

    // Each server alone answers only its share: not a key under p_pub.
    let c2 = s2.client();
    let secret2 = login_secret(&ALICE_PW.into(), DOMAIN, 2).unwrap();
    let session = c2.login("alice", &secret2).await.unwrap();
    let e = c2
        .fetch_keys(&session, &params, &recent_periods()[..1])
        .await
        .unwrap_err();
    assert!(matches!(e, PkgClientError::Ibe(_)), "{e:?}");
    let answer = c2
        .fetch_key_entries(&session, &recent_periods()[..1])
        .await
        .unwrap();
    assert_eq!(answer.index, Some(2));

    // The home server's embedded registrar takes only the device
    // credentials it issued with the keys: neither the account password
    // nor its login secret is a SIP credential.
    let proxy_addr = s1.sip.unwrap();
    let mut agents = Vec::new();
    for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        let (aor, mut got) = fetch_threshold_keys_and_device(
            &params,
            user,
            (None, &pw.into()),
            &no_otp,
            &recent_periods(),
            &laptop_at(1),
        )
        .await
        .unwrap();
        // The first two good servers to answer (all three are honest).
        assert_eq!(got.used.len(), 2, "{:?}", got.used);
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);
        let [a, b] = [got.used[0], got.used[1]];
        assert_eq!(
            got.describe(t),
            format!("servers {a} and {b} of 3 (2 needed)")
        );
        for k in &got.keys {
            check_key(&params, k).unwrap();
        }
        let device = got.device.take().unwrap().sip.unwrap();
        assert_eq!(
            (device.username.as_str(), device.device.as_str()),
            (user, "laptop")
        );
        let secret1 = login_secret(&pw.into(), DOMAIN, 1).unwrap();
        assert_ne!(device.password.expose(), pw);
        assert_ne!(device.password.expose(), secret1.expose());
        let builder =
            || ConfigBuilder::new(aor.clone(), params.clone(), proxy_addr).keys(got.keys.clone());
        for not_sip in [pw, secret1.expose()] {
            let mut refused = start(builder().password(not_sip).build()).await.unwrap();
            assert_eq!(
                registration_outcome(&mut refused).await,
                AgentEvent::RegistrationFailed { status: 403 }
            );
        }
        let config = builder().password(device.password.expose()).build();
        agents.push(start(config).await.unwrap());
    }
    // Each server keeps its own audit of the shares it issued.
    for p in &pkgs {
        let audit = p.admin_ok(&["audit", "--user", "alice"], "");
        assert!(audit.lines().any(|l| l.ends_with("\tissued")), "{audit}");
    }
    let mut bob = agents.pop().unwrap();
    let mut alice = agents.pop().unwrap();
    for a in [&mut alice, &mut bob] {
        register(a).await;
    }
    let w = Wait::default();
    let (_, incoming) = w.dial(&mut alice, &mut bob, "bob").await;
    let AgentEvent::IncomingCall { call, verified, .. } = incoming else {
        unreachable!()
    };
    assert_eq!(verified, Some(id_now("alice", DOMAIN)));
    let answered = w.answer(&mut bob, &mut alice, call).await;
    assert!(
        matches!(&answered, AgentEvent::Answered { verified: Some(v), tunneled: true, .. } if *v == id_now("bob", DOMAIN)),
        "{answered:?}"
    );
}

/// Writes `name`'s agent configuration (`[pkg]` at `home`, the proxy
/// `proxy`, a key store of its own, `otp_command` if given) in `dir`
/// and returns its path.
fn agent_toml(
    dir: &Path,
    name: &str,
    (home, proxy): (&Server, std::net::SocketAddr),
    otp_command: Option<&Path>,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join(format!("{name}.password"));
    std::fs::write(&pw, format!("{ALICE_PW}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let otp = otp_command.map_or(String::new(), |c| {
        format!("otp_command = [\"{}\"]\n", c.display())
    });
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[account]\naor = \"sip:alice@{DOMAIN}\"\npassword_file = \"{name}.password\"\n\
             [sip]\nlisten = \"127.0.0.1:0\"\nproxy = \"{proxy}\"\n\
             [pkg]\nurl = \"{}\"\nfingerprint = \"{}\"\nstore = \"{name}.keystore\"\nuser = \"alice\"\n{otp}\
             [security]\npolicy = \"require\"\n[media]\nice = false\n",
            home.url,
            ibephone::pkg_client::tls::fingerprint_hex(&home.fingerprint),
        ),
    )
    .unwrap();
    path
}

/// Issue 16: the agent at a threshold provider registers with the device
/// credential its home server issued with the keys, never with the
/// account password; with no credential to be had (home server down, none
/// stored) it says so and does not start, the keys stored all the same.
#[tokio::test]
async fn the_agent_at_a_threshold_provider_never_registers_with_the_password() {
    use ibephone::agent::keys::{from_pkg, load_with_renewal, KeyError, Origin};
    let pkgs = three();
    let s1 = Server::start_with(&pkgs[0].config, &["--sip", "127.0.0.1:0"]);
    let s2 = pkgs[1].start();
    let s3 = pkgs[2].start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = s1.sip.unwrap();
    let path = agent_toml(dir.path(), "alice", (&s1, proxy), None);
    let (config, p, _) = load_with_renewal(&path).await.unwrap();
    assert_eq!(p.origin, Origin::Pkg);
    let device = p
        .sip
        .clone()
        .expect("a device credential from the home server");
    assert_eq!(device.username, "alice");
    assert_eq!(config.password.as_str(), device.password.expose());
    assert_ne!(config.password.as_str(), ALICE_PW);
    let store_dir = dir.path().join("alice.keystore");
    let store =
        ibephone::pkg_client::KeyStore::open(&store_dir, ibephone::pkg_client::Unlock::KeyFile)
            .unwrap();
    assert_eq!(store.sip_credential(), Some(&device));
    drop(store);
    // It registers at the home server's registrar with it.
    let mut alice = start(config).await.unwrap();
    register(&mut alice).await;
    drop(alice);

    // A phone whose store has the keys but no device credential (fetched
    // by a renewal, which asks none), at its first start with the home
    // server down: servers 2 and 3 give the keys, server 1 no credential.
    let path2 = agent_toml(dir.path(), "alice2", (&s1, proxy), None);
    let settings = ibephone::agent::config::PkgSettings {
        discover: false,
        url: s1.url.clone(),
        fingerprint: Some(s1.fingerprint),
        store: dir.path().join("alice2.keystore"),
        user: "alice".into(),
        otp_command: None,
    };
    let aor = ibephone::ibe::Aor::parse("sip:alice@atlanta.invalid").unwrap();
    let renewed = from_pkg(
        &settings,
        &aor,
        &ALICE_PW.into(),
        pkg_server::http::now_unix() as u64,
    )
    .await
    .unwrap();
    assert!(renewed.sip.is_none(), "a renewal asks no credential");
    s1.stop();
    let e = load_with_renewal(&path2).await.unwrap_err();
    assert!(matches!(&e, KeyError::NoDeviceCredential { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("no SIP credential for this device")
            && text.contains("does not register with the account password"),
        "{text}"
    );
    let store = ibephone::pkg_client::KeyStore::open(
        &settings.store,
        ibephone::pkg_client::Unlock::KeyFile,
    )
    .unwrap();
    assert!(store.sip_credential().is_none());
    assert_eq!(store.keys().unwrap().len(), 3, "the keys are stored");
    drop(store);
    // The first phone, its credential stored, starts on it with the home
    // server down (keys from servers 2 and 3).
    let (config, p, _) = load_with_renewal(&path).await.unwrap();
    assert_eq!(p.origin, Origin::Pkg);
    assert_eq!(
        p.servers.as_deref(),
        Some("servers 2 and 3 of 3 (2 needed)")
    );
    assert_eq!(config.password.as_str(), device.password.expose());
    drop((s2, s3));
}

/// Issue 16 with a second factor: one code per server is enough, since
/// the device credential is asked in the home server's session of its key
/// shares (a code works once: a second login would be refused).
#[tokio::test]
async fn with_a_second_factor_one_code_per_server_gives_keys_and_the_credential() {
    use ibephone::agent::keys::load_with_renewal;
    use std::os::unix::fs::PermissionsExt;
    let pkgs = three();
    let uris: Vec<String> = pkgs
        .iter()
        .map(|p| {
            let out = p.admin_ok(&["user", "otp", "alice"], "");
            out.lines().next().unwrap().to_string()
        })
        .collect();
    let s1 = Server::start_with(&pkgs[0].config, &["--sip", "127.0.0.1:0"]);
    let _s2 = pkgs[1].start();
    let _s3 = pkgs[2].start();
    let dir = tempfile::tempdir().unwrap();
    let now = pkg_server::http::now_unix() as u64;
    let codes: Vec<String> = uris
        .iter()
        .map(|u| totp_rs::TOTP::from_url(u).unwrap().generate(now))
        .collect();
    // The otp_command gets the server's index: this one prints each code.
    let script = dir.path().join("otp.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in 1) echo {};; 2) echo {};; 3) echo {};; *) exit 1;; esac\n",
            codes[0], codes[1], codes[2]
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = agent_toml(dir.path(), "alice", (&s1, s1.sip.unwrap()), Some(&script));
    let (config, p, _) = load_with_renewal(&path).await.unwrap();
    let device = p.sip.expect("the credential, in the same session");
    assert_eq!(config.password.as_str(), device.password.expose());
    // Server 1's code was used by that one login: a second is refused.
    let secret1 = login_secret(&ALICE_PW.into(), DOMAIN, 1).unwrap();
    let e = s1
        .client()
        .login_with_otp("alice", &secret1, Some(&codes[0].as_str().into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PkgClientError::Server { status: 401, .. }),
        "{e:?}"
    );
    let mut alice = start(config).await.unwrap();
    register(&mut alice).await;
}

#[tokio::test]
async fn one_server_down_still_works_and_one_alone_is_not_enough() {
    let pkgs = three();
    let s1 = pkgs[0].start();
    let s3 = pkgs[2].start();
    let params = s1.client().params().await.unwrap();
    // Server 2 is down.
    let got = fetch(&params, "alice", ALICE_PW).await.unwrap();
    assert_eq!(got.used, [1, 3]);
    let named = named(got).await;
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].0, 2);
    assert!(named[0].1.contains("unreachable"), "{named:?}");
    // The same with login secrets derived once before (what a phone keeps
    // for renewals instead of the password).
    let secrets = login_secrets(&params, &ALICE_PW.into()).unwrap();
    let (aor, again) =
        fetch_threshold_keys_with_secrets(&params, "alice", &secrets, &no_otp, &recent_periods())
            .await
            .unwrap();
    assert_eq!(aor.as_str(), "sip:alice@atlanta.invalid");
    assert_eq!(again.used, [1, 3]);
    // Only server 1 left: a clear sentence, no keys.
    s3.stop();
    let e = fetch(&params, "alice", ALICE_PW).await.unwrap_err();
    let PkgClientError::Threshold {
        sentence,
        refused,
        unreachable,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert!(
        sentence.starts_with(
            "only 1 of the 3 key servers of atlanta.invalid gave a good key share and 2 are needed, so no keys were fetched"
        ),
        "{sentence}"
    );
    assert!(
        sentence.contains("server 2:") && sentence.contains("server 3:"),
        "{sentence}"
    );
    assert!(refused.is_empty(), "servers down refuse no credentials");
    assert!(
        unreachable,
        "one good share and the others down: out of reach, not refused"
    );
    // A fetch that gets no keys asks the home server for no device
    // credential either: failed attempts use up none of the account's
    // device slots.
    let e = fetch_threshold_keys_and_device(
        &params,
        "alice",
        (None, &ALICE_PW.into()),
        &no_otp,
        &recent_periods(),
        &laptop_at(1),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("only 1 of the 3"), "{e}");
    assert_eq!(pkgs[0].admin_ok(&["user", "devices", "alice"], ""), "");
    // A wrong password is refused by every server up: no keys either, and
    // the error says which servers refused the credentials.
    let e = fetch(&params, "alice", "not the password")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only 0 of the 3"), "{e}");
    assert!(
        matches!(&e, PkgClientError::Threshold { refused, .. } if *refused == [1]),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_server_answering_a_wrong_share_is_named_and_skipped() {
    let ports = [free_port(), free_port(), free_port()];
    let honest = three_on(&ports);
    // A second dealing on the same ports whose server 3 has the honest
    // server 3's certificate: it passes the pin but holds a share of
    // another secret.
    let rogue: Vec<Pkg> = ports.iter().map(|p| server_dir(*p)).collect();
    for f in ["tls-cert.pem", "tls-key.pem"] {
        std::fs::copy(honest[2].path(f), rogue[2].path(f)).unwrap();
    }
    deal(&rogue);
    let s1 = honest[0].start();
    let s2 = honest[1].start();
    let s3 = rogue[2].start();
    assert_eq!(
        s3.fingerprint,
        params_of(&s1).await.threshold().unwrap().servers[2].tls_sha256
    );
    let params = params_of(&s1).await;
    let got = fetch(&params, "alice", ALICE_PW).await.unwrap();
    assert_eq!(got.used, [1, 2]);
    for k in &got.keys {
        check_key(&params, k).unwrap();
    }
    let named = named(got).await;
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].0, 3);
    assert!(
        named[0].1.contains("key share") && named[0].1.contains("wrong"),
        "{named:?}"
    );
    // With server 2 down, the bad share cannot make up the second one.
    s2.stop();
    let e = fetch(&params, "alice", ALICE_PW).await.unwrap_err();
    assert!(e.to_string().contains("server 3: its key share"), "{e}");
    drop((s1, s3));
}

/// Every server a fetch named as failed: those skipped before it returned
/// and those reported later (a server may answer after the keys).
async fn named(got: ThresholdKeys) -> Vec<(u32, String)> {
    let mut all = got.skipped;
    let mut late = got.late;
    while let Some(x) = late.recv().await {
        all.push(x);
    }
    all.sort();
    all
}

async fn params_of(s: &Server) -> PublicParams {
    s.client().params().await.unwrap()
}

#[tokio::test]
async fn a_login_secret_replayed_at_another_server_is_refused() {
    let pkgs = three();
    let s1 = pkgs[0].start();
    let s2 = pkgs[1].start();
    let pw: SecretString = ALICE_PW.into();
    let secret1 = login_secret(&pw, DOMAIN, 1).unwrap();
    // What server 1 received logs in there...
    s1.client().login("alice", &secret1).await.unwrap();
    // ... and is useless at server 2 (a dishonest server 1 replaying it).
    let e = s2.client().login("alice", &secret1).await.unwrap_err();
    assert!(
        matches!(&e, PkgClientError::Server { status: 401, code, .. } if code == "invalid_credentials"),
        "{e:?}"
    );
    // The password itself is not what a threshold server checks either.
    let e = s2.client().login("alice", &pw).await.unwrap_err();
    assert!(
        matches!(&e, PkgClientError::Server { status: 401, .. }),
        "{e:?}"
    );
    s2.client()
        .login("alice", &login_secret(&pw, DOMAIN, 2).unwrap())
        .await
        .unwrap();
    // Offline extraction is refused on a threshold server.
    let period = recent_periods()[1].to_string();
    let out = pkgs[0].path("x.keys");
    let code = pkgs[0].admin_code(
        &[
            "extract",
            "sip:alice@atlanta.invalid",
            "--period",
            &period,
            "--out",
            out.to_str().unwrap(),
        ],
        "passphrase 123\n",
    );
    assert_eq!(code, 5);
    assert!(!Path::new(&out).exists());
}

#[tokio::test]
async fn parameters_whose_public_shares_do_not_interpolate_are_refused() {
    let pkgs = three();
    let s1 = pkgs[0].start();
    let (_, json, _) = raw(&s1, "GET", "/v1/params", &[], vec![]).await;
    let good = PublicParams::from_json(&json).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Swap the public shares of servers 1 and 2: same points, wrong places.
    let a = v["threshold"]["servers"][0]["p_pub_i"].clone();
    v["threshold"]["servers"][0]["p_pub_i"] = v["threshold"]["servers"][1]["p_pub_i"].clone();
    v["threshold"]["servers"][1]["p_pub_i"] = a;
    let e = PublicParams::from_json(&v.to_string()).unwrap_err();
    assert!(e.to_string().contains("p_pub"), "{e}");
    // A t above the number of servers is refused too.
    let mut w: serde_json::Value = serde_json::from_str(&json).unwrap();
    w["threshold"]["t"] = 4.into();
    assert!(PublicParams::from_json(&w.to_string()).is_err());
    assert!(good.threshold().is_some());
    // A second dealing into an initialized directory is refused.
    let again = pkgs[0].admin(
        &[
            "init",
            "--domain",
            DOMAIN,
            "--threshold",
            "2/3",
            "--server-config",
            pkgs[1].config.to_str().unwrap(),
            "--server-config",
            pkgs[2].config.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(again.status.code(), Some(4));
    // Bad threshold arguments.
    let fresh = server_dir(free_port());
    assert_eq!(
        fresh.admin_code(&["init", "--domain", DOMAIN, "--threshold", "2/3"], ""),
        5
    );
    assert_eq!(
        fresh.admin_code(&["init", "--domain", DOMAIN, "--threshold", "two"], ""),
        5
    );
}

#[tokio::test]
async fn the_agent_provisions_from_a_threshold_provider_and_says_which_servers() {
    use ibephone::agent::config::PkgSettings;
    use ibephone::agent::keys::{from_pkg, Origin};
    let pkgs = three();
    let s1 = pkgs[0].start();
    let s3 = pkgs[2].start();
    let aor = ibephone::ibe::Aor::parse("sip:alice@atlanta.invalid").unwrap();
    let settings = PkgSettings {
        discover: false,
        url: s1.url.clone(),
        fingerprint: Some(s1.fingerprint),
        store: pkgs[0].path("agent-store"),
        user: "alice".into(),
        otp_command: None,
    };
    let now = pkg_server::http::now_unix() as u64;
    let p = from_pkg(&settings, &aor, &ALICE_PW.into(), now)
        .await
        .unwrap();
    assert_eq!(p.origin, Origin::Pkg);
    assert_eq!(p.keys.len(), 3);
    for k in &p.keys {
        check_key(&p.params, k).unwrap();
    }
    assert_eq!(
        p.servers.as_deref(),
        Some("servers 1 and 3 of 3 (2 needed)")
    );
    assert!(
        p.summary()
            .contains("threshold PKG: combined from servers 1 and 3"),
        "{}",
        p.summary()
    );
    // The login secrets that worked are kept, sealed, in the store: not
    // the password, and for this account and domain only.
    let store = ibephone::pkg_client::KeyStore::open(
        &settings.store,
        ibephone::pkg_client::Unlock::KeyFile,
    )
    .unwrap();
    let kept = store.login_secrets(DOMAIN, "alice").unwrap().clone();
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [1, 3]);
    assert!(kept[&1] == login_secret(&ALICE_PW.into(), DOMAIN, 1).unwrap());
    assert!(store.login_secrets(DOMAIN, "bob").is_none());
    assert!(store.login_secrets("biloxi.invalid", "alice").is_none());
    let sealed = std::fs::read_to_string(settings.store.join("keys.sealed")).unwrap();
    assert!(!sealed.contains(kept[&1].expose()));
    // The next fetch logs in with them: a wrong password no longer matters
    // while they are accepted.
    let again = from_pkg(&settings, &aor, &"not the password".into(), now)
        .await
        .unwrap();
    assert_eq!(again.origin, Origin::Pkg);
    // Too few servers, the others only down: the stored keys, saying why
    // (as with one PKG that is down).
    s3.stop();
    let p = from_pkg(&settings, &aor, &ALICE_PW.into(), now)
        .await
        .unwrap();
    assert_eq!(p.origin, Origin::Store);
    let why = p.unreachable.as_deref().unwrap_or_default();
    assert!(why.contains("only 1 of the 3 key servers"), "{why}");
}

/// The ceremony files of three servers, in their directories: member
/// files after `dkg join`, dealing files after `dkg start`.
fn dkg_join_and_start(pkgs: &[Pkg]) -> (Vec<String>, Vec<String>) {
    let members: Vec<String> = pkgs
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let out = p.dir.path().join(format!("member-{}.json", k + 1));
            let idx = (k + 1).to_string();
            p.admin_ok(
                &[
                    "dkg",
                    "join",
                    "--index",
                    &idx,
                    "--out",
                    out.to_str().unwrap(),
                ],
                "",
            );
            out.display().to_string()
        })
        .collect();
    let dealings: Vec<String> = pkgs
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let out = p.dir.path().join(format!("dealing-{}.json", k + 1));
            let mut args = vec!["dkg", "start", "--domain", DOMAIN, "--threshold", "2/3"];
            for m in &members {
                args.extend(["--member", m.as_str()]);
            }
            let out_s = out.display().to_string();
            args.extend(["--out", out_s.as_str()]);
            p.admin_ok(&args, "");
            out_s
        })
        .collect();
    (members, dealings)
}

fn dkg_finish(p: &Pkg, members: &[String], dealings: &[String]) -> std::process::Output {
    let mut args = vec!["dkg", "finish", "--domain", DOMAIN, "--threshold", "2/3"];
    for m in members {
        args.extend(["--member", m.as_str()]);
    }
    for d in dealings {
        args.extend(["--dealing", d.as_str()]);
    }
    p.admin(&args, "")
}

/// Issue 16: a threshold provider set up without a dealer (`pkg-admin
/// dkg join/start/finish` on three servers). Every server prints the same
/// fingerprint and serves the same parameters, which do not say
/// `"dealer"`; the ceremony keys are gone; keys fetched from any two
/// servers combine into keys that check under `p_pub`.
#[tokio::test]
async fn a_dkg_ceremony_without_a_dealer_gives_one_provider() {
    let pkgs: Vec<Pkg> = [free_port(), free_port(), free_port()]
        .iter()
        .map(|p| server_dir(*p))
        .collect();
    let (members, dealings) = dkg_join_and_start(&pkgs);
    let mut fingerprints = Vec::new();
    for p in &pkgs {
        let out = dkg_finish(p, &members, &dealings);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("no dealer"), "{text}");
        fingerprints.push(
            text.lines()
                .find(|l| l.starts_with("parameter fingerprint:"))
                .unwrap()
                .to_string(),
        );
        assert!(!p.dir.path().join("dkg-ceremony.json").exists());
        p.admin_ok(&["user", "add", "alice"], &format!("{ALICE_PW}\n"));
    }
    assert!(fingerprints.iter().all(|f| *f == fingerprints[0]));
    let mut servers: Vec<_> = pkgs.iter().map(|p| p.start()).collect();
    let params = servers[0].client().params().await.unwrap();
    for s in &servers[1..] {
        assert_eq!(s.client().params().await.unwrap(), params);
    }
    let t = params.threshold().unwrap();
    assert_eq!((t.t, t.servers.len(), t.dealer), (2, 3, false));
    assert_eq!(t.servers[1].tls_sha256, servers[1].fingerprint);
    let (_, json, _) = raw(&servers[0], "GET", "/v1/params", &[], vec![]).await;
    assert!(!json.contains("dealer"), "{json}");
    drop(servers.remove(0));
    // Server 1 down: servers 2 and 3 still give working keys.
    let got = fetch(&params, "alice", ALICE_PW).await.unwrap();
    assert_eq!(got.used, [2, 3]);
    for k in &got.keys {
        check_key(&params, k).unwrap();
    }
}

/// A dealer whose share for one server was changed (or does not match its
/// commitments) is named at that server's `dkg finish`, which stores
/// nothing; a dealing of another ceremony is refused the same way.
#[tokio::test]
async fn a_bad_share_is_named_at_dkg_finish_and_nothing_is_stored() {
    let pkgs: Vec<Pkg> = [free_port(), free_port(), free_port()]
        .iter()
        .map(|p| server_dir(*p))
        .collect();
    let (members, dealings) = dkg_join_and_start(&pkgs);
    // Dealer 3's share for server 2, one bit changed.
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dealings[2]).unwrap()).unwrap();
    let ct = file["shares"][1]["ct"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if ct.starts_with('A') { 'B' } else { 'A' },
        &ct[1..]
    );
    file["shares"][1]["ct"] = serde_json::Value::String(flipped);
    let tampered = pkgs[2].dir.path().join("dealing-3-tampered.json");
    std::fs::write(&tampered, file.to_string()).unwrap();
    let with_tampered = [
        dealings[0].clone(),
        dealings[1].clone(),
        tampered.display().to_string(),
    ];
    let out = dkg_finish(&pkgs[1], &members, &with_tampered);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dealer 3"), "{err}");
    // Nothing stored: the honest files still finish afterwards.
    let out = dkg_finish(&pkgs[1], &members, &dealings);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Server 1 given a dealing for another domain: refused.
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dealings[1]).unwrap()).unwrap();
    other["domain"] = serde_json::Value::String("evil.invalid".into());
    let foreign = pkgs[0].dir.path().join("dealing-2-foreign.json");
    std::fs::write(&foreign, other.to_string()).unwrap();
    let out = dkg_finish(
        &pkgs[0],
        &members,
        &[
            dealings[0].clone(),
            foreign.display().to_string(),
            dealings[2].clone(),
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another ceremony"));
}

/// A TCP gate in front of a server: connections to `port` are accepted
/// but nothing passes either way until the gate is opened; then bytes flow
/// to `to` unchanged (TLS end to end). A server that is slow to answer.
struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    seen: tokio::sync::watch::Receiver<usize>,
}

impl Gate {
    async fn new(port: u16, to: u16) -> Gate {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let (open, gate) = tokio::sync::watch::channel(false);
        let (seen_tx, seen) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                seen_tx.send_modify(|n| *n += 1);
                let mut gate = gate.clone();
                tokio::spawn(async move {
                    if gate.wait_for(|o| *o).await.is_err() {
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Gate { open, seen }
    }

    /// Waits until the phone has connected through the gate.
    async fn connected(&mut self) {
        self.seen.wait_for(|n| *n > 0).await.unwrap();
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

/// Three servers 2-of-3 whose server 3 sits behind a closed [`Gate`]
/// (the phone knows it at the gate's port); server 3 is `rogue` when
/// asked: a share of another dealing under the honest server 3's
/// certificate.
async fn three_with_slow_third(rogue: bool) -> (Vec<Pkg>, Vec<Server>, Gate) {
    let ports = [free_port(), free_port(), free_port()];
    let behind = free_port();
    let pkgs: Vec<Pkg> = vec![
        server_dir(ports[0]),
        server_dir(ports[1]),
        server_dir_at(behind, ports[2]),
    ];
    deal(&pkgs);
    // The rogue's data directories are returned with the others: dropped
    // here, its database file would vanish under the running server
    // (SQLite then fails to open new connections: a 503, not the share).
    let mut rogue_dirs = Vec::new();
    let third = if rogue {
        let other: Vec<Pkg> = vec![
            server_dir(free_port()),
            server_dir(free_port()),
            server_dir_at(behind, ports[2]),
        ];
        for f in ["tls-cert.pem", "tls-key.pem"] {
            std::fs::copy(pkgs[2].path(f), other[2].path(f)).unwrap();
        }
        deal(&other);
        let started = other[2].start();
        rogue_dirs = other;
        started
    } else {
        pkgs[2].start()
    };
    let servers = vec![pkgs[0].start(), pkgs[1].start(), third];
    let gate = Gate::new(ports[2], behind).await;
    let mut pkgs = pkgs;
    pkgs.extend(rogue_dirs);
    (pkgs, servers, gate)
}

#[tokio::test]
async fn a_slow_server_does_not_delay_the_keys_and_is_heard_later() {
    let (_pkgs, servers, mut gate) = three_with_slow_third(false).await;
    let params = params_of(&servers[0]).await;
    // Server 3 answers nothing until the keys are back: had the fetch
    // waited for it, this would hang (SERVER_TIMEOUT, then no server 3).
    let (_, got) = fetch_threshold_keys(
        &params,
        "alice",
        &ALICE_PW.into(),
        &no_otp,
        &recent_periods(),
    )
    .await
    .unwrap();
    gate.connected().await;
    assert_eq!(got.used, [1, 2]);
    assert_eq!(got.pending, [3]);
    assert!(got.skipped.is_empty(), "{:?}", got.skipped);
    for k in &got.keys {
        check_key(&params, k).unwrap();
    }
    // Server 3 is honest: once it answers, nothing bad is reported and
    // the report closes.
    gate.open();
    let mut late = got.late;
    assert_eq!(late.recv().await, None);
    // The login secrets that worked are there to keep (3 was not heard).
    assert_eq!(got.secrets.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert!(got.derived);
}

#[tokio::test]
async fn a_bad_share_heard_after_the_keys_is_still_named() {
    let (_pkgs, servers, gate) = three_with_slow_third(true).await;
    let params = params_of(&servers[0]).await;
    let (_, got) = fetch_threshold_keys(
        &params,
        "alice",
        &ALICE_PW.into(),
        &no_otp,
        &recent_periods(),
    )
    .await
    .unwrap();
    assert_eq!(got.used, [1, 2]);
    assert_eq!(got.pending, [3]);
    gate.open();
    let mut late = got.late;
    let (index, why) = late.recv().await.unwrap();
    assert_eq!(index, 3);
    assert!(why.contains("key share") && why.contains("wrong"), "{why}");
    assert_eq!(late.recv().await, None);
}

#[tokio::test]
async fn t_minus_one_good_shares_never_give_keys_even_while_the_last_is_slow() {
    let (pkgs, servers, gate) = three_with_slow_third(false).await;
    let params = params_of(&servers[0]).await;
    let mut servers = servers;
    // Server 2 is down; server 1 answers at once; server 3 is slow.
    let s2 = servers.remove(1);
    s2.stop();
    let fetch = tokio::spawn(async move {
        fetch_threshold_keys(
            &params,
            "alice",
            &ALICE_PW.into(),
            &no_otp,
            &recent_periods(),
        )
        .await
    });
    // Server 1 has issued its shares: the phone holds t-1 good ones...
    loop {
        let audit = pkgs[0].admin_ok(&["audit", "--user", "alice"], "");
        if audit.lines().any(|l| l.ends_with("\tissued")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ... and still no keys.
    assert!(!fetch.is_finished());
    gate.open();
    let (_, got) = fetch.await.unwrap().unwrap();
    assert_eq!(got.used, [1, 3]);
    assert_eq!(got.skipped.len(), 1, "{:?}", got.skipped);
    assert_eq!(got.skipped[0].0, 2);
    drop(servers);
}

#[tokio::test]
async fn kept_login_secrets_are_used_and_a_refused_one_is_derived_anew() {
    let pkgs = three();
    let servers: Vec<Server> = pkgs.iter().map(Pkg::start).collect();
    let params = params_of(&servers[0]).await;
    let pw: SecretString = ALICE_PW.into();
    let kept = login_secrets(&params, &pw).unwrap();
    // Kept secrets that all work: nothing derived, nothing to replace.
    let (_, got) =
        fetch_threshold_keys_kept(&params, "alice", &kept, &pw, &no_otp, &recent_periods())
            .await
            .unwrap();
    assert!(!got.derived);
    // A stale secret for server 1 (the password was changed since): the
    // server refuses it, the phone derives the right one and logs in.
    // Server 3 is down, so server 1 is needed.
    let mut servers = servers;
    servers.pop().unwrap().stop();
    let mut stale = kept.clone();
    stale.insert(
        1,
        login_secret(&"the old password".into(), DOMAIN, 1).unwrap(),
    );
    let (_, got) =
        fetch_threshold_keys_kept(&params, "alice", &stale, &pw, &no_otp, &recent_periods())
            .await
            .unwrap();
    assert_eq!(got.used, [1, 2]);
    assert!(got.derived);
    assert!(
        got.secrets[&1] == kept[&1],
        "server 1's secret derived anew"
    );
    assert!(got.secrets[&2] == kept[&2]);
    // Without the password a stale secret is only refused.
    let only: ibephone::pkg_client::threshold::LoginSecrets =
        [(1, stale[&1].clone())].into_iter().collect();
    let e = fetch_threshold_keys_with_secrets(&params, "alice", &only, &no_otp, &recent_periods())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("server 1: "), "{e}");
}

/// The phone's client keeps its connection (HTTP/1.1 keep-alive): a
/// login, a key fetch, the parameters and a logout at one server cost one
/// TCP and TLS handshake (the gate counts connections). The pin is still
/// checked: a client pinned to another certificate is refused on every
/// request, and keeps nothing to reuse.
#[tokio::test]
async fn one_kept_connection_carries_login_keys_and_logout_and_the_pin_still_holds() {
    let (_pkgs, servers, gate) = three_with_slow_third(false).await;
    gate.open();
    let params = params_of(&servers[0]).await;
    let s3 = params.threshold().unwrap().servers[2].clone();
    let client = ibephone::pkg_client::PkgClient::new(&s3.pkg_url, Some(s3.tls_sha256)).unwrap();
    let secret = login_secret(&ALICE_PW.into(), DOMAIN, 3).unwrap();
    let session = client.login("alice", &secret).await.unwrap();
    let keys = client
        .fetch_key_entries(&session, &recent_periods())
        .await
        .unwrap();
    assert_eq!(keys.index, Some(3));
    client.params().await.unwrap();
    client.logout(&session).await.unwrap();
    assert_eq!(*gate.seen.borrow(), 1, "one handshake for four requests");
    let wrong = ibephone::pkg_client::PkgClient::new(&s3.pkg_url, Some([7u8; 32])).unwrap();
    for _ in 0..2 {
        let e = wrong.params().await.unwrap_err();
        assert!(matches!(e, PkgClientError::PinMismatch { .. }), "{e:?}");
    }
    assert_eq!(
        *gate.seen.borrow(),
        3,
        "each refused request made its own handshake"
    );
}

/// Issue 16: a threshold phone with keys and a device credential in its
/// store starts on them when every key server is out of reach, exactly as
/// a phone of one PKG does; relay credentials stored at the last start
/// are used again while unexpired. One server refusing (the account
/// disabled there) among servers down is an error, never the stored keys:
/// making the other servers look down must not hide a refusal.
#[tokio::test]
async fn with_every_key_server_down_the_agent_starts_on_its_stored_keys_but_never_past_a_refusal() {
    use ibephone::agent::keys::{load_with_renewal, KeyError, Origin};
    let pkgs = three();
    // The home server runs a relay (credentials only: coturn's part).
    let mut toml = std::fs::read_to_string(&pkgs[0].config).unwrap();
    toml.push_str("[turn]\nembedded = false\nuris = [\"turn:127.0.0.1:3478?transport=udp\"]\n");
    std::fs::write(&pkgs[0].config, toml).unwrap();
    let s1 = Server::start_with(&pkgs[0].config, &["--sip", "127.0.0.1:0"]);
    let s2 = pkgs[1].start();
    let s3 = pkgs[2].start();
    let dir = tempfile::tempdir().unwrap();
    let path = agent_toml(dir.path(), "alice", (&s1, s1.sip.unwrap()), None);
    let (_, fetched, _) = load_with_renewal(&path).await.unwrap();
    assert_eq!(fetched.origin, Origin::Pkg);
    let device = fetched.sip.clone().expect("a device credential");
    let turn = fetched
        .turn
        .clone()
        .expect("relay credentials from the home server");
    s1.stop();
    s2.stop();
    s3.stop();

    // Every server down: the stored keys, device credential and relay
    // credentials, saying why.
    let (config, p, _) = load_with_renewal(&path).await.unwrap();
    assert_eq!(p.origin, Origin::Store);
    let why = p.unreachable.as_deref().unwrap_or_default();
    assert!(why.contains("only 0 of the 3 key servers"), "{why}");
    assert_eq!(p.keys.len(), fetched.keys.len());
    assert_eq!(p.sip.as_ref(), Some(&device));
    assert_eq!(config.password.as_str(), device.password.expose());
    assert_ne!(config.password.as_str(), ALICE_PW);
    let stored = p.turn.clone().expect("the stored relay credentials");
    assert_eq!(stored.username, turn.username);
    assert_eq!(stored.password, turn.password);
    assert_eq!(stored.uris, turn.uris);
    assert!(stored.expires_at <= turn.expires_at);
    assert!(
        p.summary().contains("from the key store"),
        "{}",
        p.summary()
    );

    // Server 2 up again but refusing (the account disabled there), the
    // others down: an error naming it, not the stored keys.
    pkgs[1].admin_ok(&["user", "disable", "alice"], "");
    let s2 = pkgs[1].start();
    let e = load_with_renewal(&path).await.unwrap_err();
    let KeyError::Pkg { source, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(
        matches!(
            source,
            PkgClientError::Threshold {
                unreachable: false,
                ..
            }
        ),
        "{source:?}"
    );
    assert!(e.to_string().contains("server 2:"), "{e}");
    // Enabled again, alone: one good share and the others down is out
    // of reach, and the stored keys serve again.
    pkgs[1].admin_ok(&["user", "enable", "alice"], "");
    let (_, p, _) = load_with_renewal(&path).await.unwrap();
    assert_eq!(p.origin, Origin::Store);
    let why = p.unreachable.as_deref().unwrap_or_default();
    assert!(why.contains("only 1 of the 3 key servers"), "{why}");
    drop(s2);
}

/// Issue 16: relay credentials kept at a start are not used after their
/// expiry (the phone then starts on its stored keys without a relay).
#[tokio::test]
async fn stored_relay_credentials_are_not_used_after_their_expiry() {
    use ibephone::agent::keys::{load_with_renewal, Origin};
    let pkgs = three();
    let mut toml = std::fs::read_to_string(&pkgs[0].config).unwrap();
    toml.push_str(
        "[turn]\nembedded = false\nttl_secs = 2\nuris = [\"turn:127.0.0.1:3478?transport=udp\"]\n",
    );
    std::fs::write(&pkgs[0].config, toml).unwrap();
    let s1 = Server::start_with(&pkgs[0].config, &["--sip", "127.0.0.1:0"]);
    let s2 = pkgs[1].start();
    let dir = tempfile::tempdir().unwrap();
    let path = agent_toml(dir.path(), "alice", (&s1, s1.sip.unwrap()), None);
    let (_, fetched, _) = load_with_renewal(&path).await.unwrap();
    let turn = fetched.turn.expect("relay credentials for 2 s");
    s1.stop();
    s2.stop();
    // Past their expiry (the user name's, whole seconds).
    let expiry: u64 = turn.username.split_once(':').unwrap().0.parse().unwrap();
    while (pkg_server::http::now_unix() as u64) <= expiry {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, p, _) = load_with_renewal(&path).await.unwrap();
    assert_eq!(p.origin, Origin::Store);
    assert!(p.sip.is_some(), "the stored device credential still serves");
    assert!(p.turn.is_none(), "expired relay credentials are not used");
}

/// Adds a relay (credentials only: coturn's part) to `p`'s configuration,
/// and `extra` (sections) after it.
fn with_relay(p: &Pkg, extra: &str) {
    let mut toml = std::fs::read_to_string(&p.config).unwrap();
    toml.push_str(&format!(
        "[turn]\nembedded = false\nuris = [\"turn:127.0.0.1:3478?transport=udp\"]\n{extra}"
    ));
    std::fs::write(&p.config, toml).unwrap();
}

/// What a relay renewal task reported first (its outcome is not Clone).
#[derive(Debug)]
enum Seen {
    Renewed {
        usable: bool,
    },
    CodeNeeded {
        servers: Vec<u32>,
        retry: Option<std::time::SystemTime>,
    },
    Other,
}

/// The first outcome of a relay renewal task started with no credentials
/// held (due at once), and the relays it handed to the RTP ports.
async fn first_outcome(
    renewal: ibephone::agent::relay::RelayRenewal,
) -> (Seen, ibephone::agent::media_io::ProviderRelay) {
    use ibephone::agent::relay::RelayOutcome;
    let relay = ibephone::agent::media_io::ProviderRelay::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(renewal.run(relay.clone(), None, false, move |o| {
        let _ = tx.send(match o {
            RelayOutcome::Renewed { usable, .. } => Seen::Renewed { usable: *usable },
            RelayOutcome::CodeNeeded { servers, retry } => Seen::CodeNeeded {
                servers: servers.clone(),
                retry: *retry,
            },
            other => {
                eprintln!("relay outcome: {other:?}");
                Seen::Other
            }
        });
    }));
    let got = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .expect("an outcome within 60 s")
        .expect("the task reports");
    task.abort();
    (got, relay)
}

/// Issue 16 follow-up: a threshold agent renews its relay credentials
/// while it runs at the home key server alone (the others down), logged
/// in with that server's login secret: the server refuses the bare
/// password, so a renewal that works never sent it. What it got is kept
/// sealed in the store for the next start; a stale kept secret is derived
/// anew from the password and kept in its place.
#[tokio::test]
async fn a_threshold_agent_renews_its_relay_credentials_at_the_home_server_with_its_login_secret() {
    use ibephone::agent::keys::load_with_renewal;
    use ibephone::pkg_client::{KeyStore, Unlock};
    let pkgs = three();
    with_relay(&pkgs[0], "");
    let s1 = Server::start_with(&pkgs[0].config, &["--sip", "127.0.0.1:0"]);
    let s2 = pkgs[1].start();
    let s3 = pkgs[2].start();
    let dir = tempfile::tempdir().unwrap();
    let path = agent_toml(dir.path(), "alice", (&s1, s1.sip.unwrap()), None);
    let (_, p, renewal) = load_with_renewal(&path).await.unwrap();
    let at_start = p.turn.clone().expect("relay credentials with the keys");
    let renewal = renewal.expect("a [pkg] agent renews");
    // Only the home server is asked: the others may be down.
    s2.stop();
    s3.stop();
    let e = s1
        .client()
        .login("alice", &ALICE_PW.into())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PkgClientError::Server { status: 401, .. }),
        "the home server refuses the bare password: {e:?}"
    );
    // Later than the start's credentials (their user name has the expiry
    // in whole seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let relay = || renewal.relay(p.pin).at_threshold(p.params.clone());
    let (seen, ports) = first_outcome(relay()).await;
    assert!(matches!(seen, Seen::Renewed { usable: true }), "{seen:?}");
    assert_eq!(
        ports.turn(std::time::SystemTime::now()).len(),
        1,
        "the RTP ports got the relay"
    );
    let store_dir = dir.path().join("alice.keystore");
    let kept = || {
        let s = KeyStore::open(&store_dir, Unlock::KeyFile).unwrap();
        let turn = s.turn_credentials(std::time::SystemTime::now());
        (turn, s.login_secrets(DOMAIN, "alice").cloned())
    };
    let (turn, secrets) = kept();
    let renewed = turn.expect("the renewed credentials kept in the store");
    assert_ne!(renewed.username, at_start.username, "fresh ones kept");
    assert!(renewed.username.ends_with(":alice"), "{}", renewed.username);
    let right = login_secret(&ALICE_PW.into(), DOMAIN, 1).unwrap();
    assert!(secrets.as_ref().unwrap()[&1] == right);
    // A stale kept secret for the home server (the password changed):
    // refused, derived anew from the password, and kept.
    {
        let mut s = KeyStore::open(&store_dir, Unlock::KeyFile).unwrap();
        let mut stale = secrets.unwrap();
        stale.insert(
            1,
            login_secret(&"the old password".into(), DOMAIN, 1).unwrap(),
        );
        s.set_login_secrets(DOMAIN, "alice", stale).unwrap();
    }
    relay().fetch().await.unwrap();
    let (_, secrets) = kept();
    let secrets = secrets.unwrap();
    assert!(
        secrets[&1] == right,
        "the derived secret replaced the stale one"
    );
    assert!(
        secrets[&2] == login_secret(&ALICE_PW.into(), DOMAIN, 2).unwrap(),
        "the other servers' secrets kept as they were"
    );
    // The sealed store shows neither the password nor a secret.
    let sealed = std::fs::read_to_string(store_dir.join("keys.sealed")).unwrap();
    assert!(!sealed.contains(ALICE_PW) && !sealed.contains(right.expose()));
    // The home server down: the renewal fails (retried later) and never
    // turns to the other servers with the password.
    s1.stop();
    let e = relay().fetch().await.unwrap_err();
    assert!(
        matches!(e, ibephone::agent::relay::RelayError::Pkg { .. }),
        "{e:?}"
    );
}

/// Issue 16 follow-up with a second factor: a relay renewal in the
/// background never waits for a person. Without `otp_command` (the
/// desktop app) the home server's `otp_required` is reported at once and
/// asked again only in an hour (each attempt counts as a failed login);
/// with it, the command is given the home server's index and its code
/// logs in.
#[tokio::test]
async fn a_relay_renewal_that_needs_a_one_time_code_reports_it_and_does_not_wait() {
    use std::os::unix::fs::PermissionsExt;
    let pkgs = three();
    // Locked out at the second failure in a row.
    with_relay(&pkgs[0], &throttle(2, 1000, 60));
    let uri = pkgs[0].admin_ok(&["user", "otp", "alice"], "");
    let s1 = pkgs[0].start();
    let params = params_of(&s1).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = |otp_command| ibephone::agent::config::PkgSettings {
        discover: false,
        url: s1.url.clone(),
        fingerprint: Some(s1.fingerprint),
        store: dir.path().join("store"),
        user: "alice".into(),
        otp_command,
    };
    let aor = ibephone::ibe::Aor::parse("sip:alice@atlanta.invalid").unwrap();
    let renewal = |otp_command| {
        ibephone::agent::relay::RelayRenewal::new(
            settings(otp_command),
            aor.clone(),
            ALICE_PW.into(),
        )
        .at_threshold(params.clone())
    };
    let before = std::time::SystemTime::now();
    let (seen, ports) = first_outcome(renewal(None)).await;
    let Seen::CodeNeeded { servers, retry } = seen else {
        panic!("{seen:?}")
    };
    assert_eq!(servers, [1], "the home server's code");
    let wait = retry.unwrap().duration_since(before).unwrap();
    assert!(
        wait >= ibephone::agent::relay::CODE_RETRY,
        "asked again only after an hour: {wait:?}"
    );
    assert!(ports.turn(std::time::SystemTime::now()).is_empty());
    // otp_command: called with the home server's index.
    let now = pkg_server::http::now_unix() as u64;
    let code = totp_rs::TOTP::from_url(uri.lines().next().unwrap())
        .unwrap()
        .generate(now);
    let script = dir.path().join("otp.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncase \"$1\" in 1) echo {code};; *) exit 1;; esac\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let with_code = renewal(Some(vec![script.display().to_string()]));
    let c = with_code.fetch().await.unwrap();
    assert!(c.username.ends_with(":alice"), "{}", c.username);
    // The secret derived there is kept. A wrong code with it is one
    // failed login, not two (the secret derived again is the same, so it
    // is not tried again): the account is not locked out by it.
    let kept = ibephone::pkg_client::KeyStore::open(
        &dir.path().join("store"),
        ibephone::pkg_client::Unlock::KeyFile,
    )
    .unwrap()
    .login_secrets(DOMAIN, "alice")
    .cloned()
    .unwrap();
    let secret1 = login_secret(&ALICE_PW.into(), DOMAIN, 1).unwrap();
    assert!(kept[&1] == secret1);
    let wrong = dir.path().join("wrong.sh");
    std::fs::write(&wrong, "#!/bin/sh\necho 000000\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o700)).unwrap();
    let e = renewal(Some(vec![wrong.display().to_string()]))
        .fetch()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let e = s1.client().login("alice", &secret1).await.unwrap_err();
    assert!(e.is_otp_required(), "not locked out: {e:?}");
}

/// A kept login secret refused with a wrong one-time code is not tried
/// again when the password derives the same secret: one failed login at
/// that server, not two (the server locks the account out at the second
/// failure here).
#[tokio::test]
async fn a_wrong_code_with_a_kept_secret_is_one_failed_login_at_a_key_fetch() {
    let pkgs = three();
    let mut toml = std::fs::read_to_string(&pkgs[0].config).unwrap();
    toml.push_str(&throttle(2, 1000, 60));
    std::fs::write(&pkgs[0].config, toml).unwrap();
    pkgs[0].admin_ok(&["user", "otp", "alice"], "");
    let s1 = pkgs[0].start();
    let params = params_of(&s1).await;
    let pw: SecretString = ALICE_PW.into();
    let kept = login_secrets(&params, &pw).unwrap();
    let wrong = |i: u32| (i == 1).then(|| SecretString::from("000000"));
    let e = fetch_threshold_keys_kept(&params, "alice", &kept, &pw, &wrong, &recent_periods())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("server 1: "), "{e}");
    let e = s1.client().login("alice", &kept[&1]).await.unwrap_err();
    assert!(e.is_otp_required(), "not locked out: {e:?}");
}
