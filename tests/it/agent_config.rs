//! The example agent configurations parse (keys from the PKG), and the
//! loader's errors name the file and what is wrong (missing key file,
//! readable secrets, keys of another provider, both or no key source).

use ibephone::agent::config::{write_key_file, AgentConfig, AgentFile, ConfigError, KeySource};
use ibephone::ibe::{extract, Aor, Identity, MasterSecret, Period, PublicParams};
use std::os::unix::fs::PermissionsExt;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ibephone-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn example_config_with_issued_keys_loads() {
    let dir = temp_dir("agent-config");
    std::fs::copy("config/alice.toml", dir.join("alice.toml")).unwrap();
    // Before the secrets exist: a clear error naming the file.
    let err = AgentConfig::load(&dir.join("alice.toml")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Read { path, .. } if path.ends_with("alice.password")),
        "{err}"
    );
    std::fs::write(dir.join("alice.password"), "s3cret\n").unwrap();
    std::fs::set_permissions(
        dir.join("alice.password"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = AgentConfig::load(&dir.join("alice.toml")).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(
        dir.join("alice.password"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // The example takes its keys from the PKG, stored beside the config.
    let file = AgentFile::load(&dir.join("alice.toml")).unwrap();
    match &file.keys {
        KeySource::Pkg(p) => {
            assert_eq!(p.url, "https://127.0.0.1:8443");
            assert_eq!(p.fingerprint, None);
            assert_eq!(p.store, dir.join("alice.keystore"));
            assert_eq!(p.user, "alice");
        }
        other => panic!("{other:?}"),
    }
    let err = AgentConfig::load(&dir.join("alice.toml")).unwrap_err();
    assert!(err.to_string().contains("[pkg]"), "{err}");
    // The same account with a key file instead.
    let text = std::fs::read_to_string(dir.join("alice.toml")).unwrap();
    let (head, tail) = text.split_once("[pkg]").unwrap();
    let (_, security) = tail.split_once("[security]").unwrap();
    std::fs::write(
        dir.join("alice.toml"),
        format!("{head}[keys]\nfile = \"alice.keys.json\"\n[security]{security}"),
    )
    .unwrap();
    let both = format!("{head}[keys]\nfile = \"k\"\n[pkg]\nurl = \"https://127.0.0.1:1\"\n");
    std::fs::write(dir.join("both.toml"), both).unwrap();
    let err = AgentFile::load(&dir.join("both.toml")).unwrap_err();
    assert!(err.to_string().contains("not both"), "{err}");
    std::fs::write(dir.join("none.toml"), head).unwrap();
    let err = AgentFile::load(&dir.join("none.toml")).unwrap_err();
    assert!(err.to_string().contains("no keys"), "{err}");

    let msk = MasterSecret::generate().unwrap();
    let params =
        PublicParams::new("atlanta.invalid", msk.p_pub(), "https://127.0.0.1:8443").unwrap();
    let aor = Aor::parse("sip:alice@atlanta.invalid").unwrap();
    let keys = vec![extract(
        &msk,
        &Identity::new(aor.clone(), Period::month("2026-11").unwrap()),
    )];
    write_key_file(&dir.join("alice.keys.json"), &params, &[], &keys).unwrap();
    let mode = std::fs::metadata(dir.join("alice.keys.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let cfg = AgentConfig::load(&dir.join("alice.toml")).unwrap();
    assert_eq!(cfg.aor, aor);
    assert_eq!(cfg.keys.len(), 1);
    assert_eq!(&*cfg.password, "s3cret");
    // The key file is never overwritten.
    assert!(write_key_file(&dir.join("alice.keys.json"), &params, &[], &keys).is_err());

    // Keys of another provider are refused by the key check.
    std::fs::remove_file(dir.join("alice.keys.json")).unwrap();
    let other = MasterSecret::generate().unwrap();
    let foreign = vec![extract(
        &other,
        &Identity::new(aor, Period::month("2026-11").unwrap()),
    )];
    write_key_file(&dir.join("alice.keys.json"), &params, &[], &foreign).unwrap();
    let err = AgentConfig::load(&dir.join("alice.toml")).unwrap_err();
    assert!(err.to_string().contains("2026-11"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bob_example_parses_too() {
    let dir = temp_dir("agent-config-bob");
    std::fs::copy("config/bob.toml", dir.join("bob.toml")).unwrap();
    let err = AgentConfig::load(&dir.join("bob.toml")).unwrap_err();
    assert!(err.to_string().contains("bob.password"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// alice's example configuration (with a 0600 password file) in `dir`,
/// and a loader that reads it with `extra` lines at the top of `[sip]`.
fn alice_with_sip_lines(
    dir: &std::path::Path,
) -> impl Fn(&str) -> Result<AgentFile, ConfigError> + '_ {
    std::fs::copy("config/alice.toml", dir.join("alice.toml")).unwrap();
    std::fs::write(dir.join("alice.password"), "s3cret\n").unwrap();
    std::fs::set_permissions(
        dir.join("alice.password"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.join("alice.toml")).unwrap();
    move |extra: &str| {
        let t = text.replacen("[sip]\n", &format!("[sip]\n{extra}"), 1);
        std::fs::write(dir.join("alice.toml"), t).unwrap();
        AgentFile::load(&dir.join("alice.toml"))
    }
}

#[test]
fn sip_keepalive_interval_is_configurable() {
    let dir = temp_dir("agent-keepalive");
    let load = alice_with_sip_lines(&dir);
    let secs = std::time::Duration::from_secs;
    // Default: 25 s (RFC 5626 keep-alives under the 30 s NAT mappings).
    assert_eq!(load("").unwrap().sip.keepalive, Some(secs(25)));
    assert_eq!(
        load("keepalive_secs = 10\n").unwrap().sip.keepalive,
        Some(secs(10))
    );
    assert_eq!(load("keepalive_secs = 0\n").unwrap().sip.keepalive, None);
    let err = load("keepalive_secs = -1\n").unwrap_err();
    assert!(err.to_string().contains("alice.toml"), "{err}");
    // An interval far beyond any NAT's mapping (or one that would
    // overflow the timers' clock) is refused by name, not taken.
    for bad in [
        "keepalive_secs = 3601\n",
        "keepalive_secs = 9223372036854775807\n",
        "network_check_secs = 9223372036854775807\n",
    ] {
        let err = load(bad).unwrap_err().to_string();
        let name = bad.split(' ').next().unwrap();
        assert!(
            err.contains(name) && err.contains("at most 3600"),
            "{bad}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[sip] pong_timeout_secs`: how long a keep-alive waits for its answer
/// before the flow counts as failed (RFC 5626 4.4.1's 10 s by default);
/// 0 (a flow failed at every ping) and absurd values are refused with a
/// sentence naming the setting and the file.
#[test]
fn sip_pong_timeout_is_configurable_and_checked() {
    let dir = temp_dir("agent-pong-timeout");
    let load = alice_with_sip_lines(&dir);
    let secs = std::time::Duration::from_secs;
    assert_eq!(load("").unwrap().sip.pong_timeout, secs(10));
    assert_eq!(
        load("pong_timeout_secs = 4\n").unwrap().sip.pong_timeout,
        secs(4)
    );
    assert_eq!(
        load("pong_timeout_secs = 120\n").unwrap().sip.pong_timeout,
        secs(120)
    );
    for bad in [
        "pong_timeout_secs = 0\n",
        "pong_timeout_secs = 121\n",
        "pong_timeout_secs = 18446744073709551615\n",
    ] {
        let err = load(bad).unwrap_err().to_string();
        assert!(
            err.contains("pong_timeout_secs") && err.contains("alice.toml"),
            "{bad}: {err}"
        );
    }
    assert!(load("pong_timeout_secs = -1\n").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[sip] expires`: the registration lifetime the phone asks for, 600 s
/// by default; below a minute (every registrar answers 423) or above a
/// day is refused with a sentence naming the setting and the file.
#[test]
fn sip_expires_is_configurable_and_checked() {
    let dir = temp_dir("agent-expires");
    let load = alice_with_sip_lines(&dir);
    assert_eq!(load("").unwrap().sip.expires, 600);
    assert_eq!(load("expires = 60\n").unwrap().sip.expires, 60);
    assert_eq!(load("expires = 86400\n").unwrap().sip.expires, 86_400);
    for bad in [
        "expires = 0\n",
        "expires = 59\n",
        "expires = 86401\n",
        "expires = 4294967295\n",
    ] {
        let err = load(bad).unwrap_err().to_string();
        assert!(
            err.contains("expires") && err.contains("alice.toml"),
            "{bad}: {err}"
        );
    }
    assert!(load("expires = -1\n").is_err());
    assert!(load("expires = 4294967296\n").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
