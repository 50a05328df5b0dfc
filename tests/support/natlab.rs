//! The NAT lab (`../shared/natlab/natlab.sh`, network namespaces, root
//! only) from Rust: a lab under its own prefix brought down when dropped,
//! a real `pkg-server` in its `prov` namespace, `ibephone agent`
//! processes in its homes. Shared by the lab tests (`tests/it/natlab.rs`)
//! and the lab bench (`benches/signaling.rs`).

use super::process::{write_secret, Agent};
use super::provider::bin;
use super::provider_bins::{run_admin, start_server_as};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The provider's domain in the lab.
pub const DOMAIN: &str = "atlanta.test";
/// The provider's public address in the lab.
pub const PROV: &str = "203.0.113.10";
/// How long one step (a registration, a call arriving) may take, with
/// retransmissions over a lossy lab.
pub const STEP: Duration = Duration::from_secs(40);

/// `../shared/natlab/natlab.sh` from the repository root, or
/// `$IBEPHONE_NATLAB_SCRIPT` (a git worktree whose `shared/` is elsewhere).
pub fn script() -> PathBuf {
    let p = match std::env::var_os("IBEPHONE_NATLAB_SCRIPT") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/natlab/natlab.sh"),
    };
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// One lab under its own prefix; brought down when dropped.
pub struct Lab {
    /// The `NATLAB` prefix of its namespaces.
    pub prefix: String,
    script: PathBuf,
    /// A temporary directory for the lab's files.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// `natlab.sh up ARGS` under a prefix made of `tag` and our pid.
    pub fn up(tag: &str, args: &[&str]) -> Lab {
        let prefix = format!("n{}{tag}", std::process::id() % 100_000);
        let lab = Lab {
            prefix,
            script: script(),
            dir: tempfile::tempdir().unwrap(),
        };
        // Left over from a crashed run with the same prefix: gone first.
        lab.script(&["down"]);
        let out = lab.script(&[&["up"], args].concat());
        assert!(
            out.status.success(),
            "natlab up {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.public_homes_answer_arp_at_once(args);
        // With IBEPHONE_NATLAB_PCAP=DIR, what an eavesdropper on the
        // internet side sees goes to DIR/PREFIX.pcap (for debugging; the
        // lab's `down` stops tcpdump).
        if let Some(dir) = std::env::var_os("IBEPHONE_NATLAB_PCAP") {
            let file = Path::new(&dir).join(format!("{}.pcap", lab.prefix));
            let _ = lab
                .command("wan", Path::new("tcpdump"))
                .args(["-U", "-s0", "-i", "br0", "-w"])
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            std::thread::sleep(Duration::from_millis(300));
        }
        lab
    }

    /// A public home (kind `none`) is a /32 its router answers ARP for on
    /// the internet side (proxy ARP), and Linux delays each proxied answer
    /// by a random 0 to `proxy_delay` (80 centiseconds by default): the
    /// first datagram from another router to that home waited up to 0.8 s
    /// (the other home's first ICE check in `natlab_media_none_cone_ice`,
    /// first audio 400-640 ms against ~150 ms between two NATs). A
    /// provider routes a customer's address without such a wait, so the
    /// router answers at once here.
    fn public_homes_answer_arp_at_once(&self, args: &[&str]) {
        for (flag, nat, wan) in [("--nat-a", "natA", "wA"), ("--nat-b", "natB", "wB")] {
            let public = args.windows(2).any(|w| w[0] == flag && w[1] == "none");
            if !public {
                continue;
            }
            let key = format!("net.ipv4.neigh.{wan}.proxy_delay=0");
            let out = self.script(&["exec", nat, "sysctl", "-qw", &key]);
            assert!(
                out.status.success(),
                "{nat}: sysctl {key}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("NATLAB", &self.prefix)
            .output()
            .unwrap()
    }

    /// `ip netns exec <node's namespace> PROGRAM`.
    pub fn command(&self, node: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{node}", self.prefix)])
            .arg(program);
        c
    }

    /// Initializes a PKG of [`DOMAIN`] with alice and bob and starts
    /// `pkg-server` in `prov` (PKG on 8443, SIP on 5060).
    pub fn provider(&self) -> Provider {
        self.provider_with("")
    }

    /// [`Lab::provider`] with more `[sip]` settings (`tls = true`: SIP
    /// over TLS on 5061 as well).
    pub fn provider_with(&self, sip_extra: &str) -> Provider {
        self.pkg_server(&format!(
            "[sip]\nlisten = \"{PROV}:5060\"\nuser_refresh_secs = 1\n{sip_extra}"
        ))
    }

    /// `pkg-server` as the PKG only (no `[sip]` listen: no embedded
    /// registrar/proxy), for a lab whose SIP proxy is Kamailio.
    pub fn pkg_only(&self) -> Provider {
        self.pkg_server("")
    }

    /// Initializes a PKG of [`DOMAIN`] with alice and bob and starts
    /// `pkg-server` in `prov` (PKG on 8443) with `sections` (TOML) in its
    /// configuration.
    pub fn pkg_server(&self, sections: &str) -> Provider {
        self.pkg_server_at("prov", PROV, "pkg", sections)
    }

    /// [`Lab::pkg_server`] in namespace `node`, its PKG on `host:8443`,
    /// its files under the lab's directory `name` (two providers in one
    /// lab: the one on the internet and one on `prov`'s own loopback).
    pub fn pkg_server_at(&self, node: &str, host: &str, name: &str, sections: &str) -> Provider {
        let dir = self.dir.path().join(name);
        let config = self.pkg_config(&dir, host, &dir, sections);
        let admin = |args: &[&str], stdin: &str| {
            let out = run_admin(&bin("pkg-admin"), &config, args, stdin);
            assert!(
                out.status.success(),
                "pkg-admin {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        admin(&["init", "--domain", DOMAIN], "");
        for u in ["alice", "bob"] {
            admin(&["user", "add", u], &format!("{u} lab secret\n"));
        }
        let (child, startup) =
            start_server_as(self.command(node, &bin("pkg-server")), &config, &[]);
        let fingerprint = startup.fingerprint;
        Provider {
            child,
            fingerprint,
            config,
            data_dir: dir,
        }
    }

    /// Writes `dir/pkg.toml`: the PKG on `host:8443`, its data in
    /// `data_dir`, `sections` and cheap Argon2 (a lab, not a provider).
    fn pkg_config(&self, dir: &Path, host: &str, data_dir: &Path, sections: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("pkg.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{host}:8443\"\ndata_dir = \"{}\"\n{sections}\
                 [argon2]\nm_kib = 1024\nt = 1\np = 1\n",
                data_dir.display()
            ),
        )
        .unwrap();
        config
    }

    /// A second `pkg-server` process of `first`'s provider in `prov`: its
    /// own PKG on `host:8443` and `sections` (its `[sip]`), the same
    /// data directory (database, certificate: everything several server
    /// processes of one provider share), so the same users and device
    /// credentials and the same certificate pin.
    pub fn second_server(&self, first: &Provider, host: &str, sections: &str) -> Provider {
        let config = self.pkg_config(
            &self.dir.path().join(format!("second-{host}")),
            host,
            &first.data_dir,
            sections,
        );
        let (child, startup) =
            start_server_as(self.command("prov", &bin("pkg-server")), &config, &[]);
        assert_eq!(
            startup.fingerprint, first.fingerprint,
            "one provider, one pin"
        );
        Provider {
            child,
            fingerprint: startup.fingerprint,
            config,
            data_dir: first.data_dir.clone(),
        }
    }

    /// `natlab.sh dns --domain DOMAIN RECORDS...`: dnsmasq in `prov`
    /// answering for [`DOMAIN`], every namespace's resolver pointed at it.
    pub fn dns(&self, records: &[&str]) {
        let out = self.script(&[&["dns", "--domain", DOMAIN], records].concat());
        assert!(
            out.status.success(),
            "natlab dns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kamailio (`config/kamailio/kamailio.cfg`) in `prov` on TLS
    /// `PROV:5061` (and UDP/TCP 5060) with the PKG's certificate and key,
    /// its tables in `dir/db`; returns once it accepts TLS connections.
    pub fn kamailio(&self, dir: &Path, pkg: &Provider) -> super::kamailio::Kamailio {
        let defines = super::kamailio::defines(
            DOMAIN,
            &dir.join("db"),
            Some((
                &pkg.data_dir.join("tls-cert.pem"),
                &pkg.data_dir.join("tls-key.pem"),
            )),
        );
        let mut k = super::kamailio::Kamailio::start(
            self.command("prov", &super::tools::tool_path("kamailio")),
            dir,
            &[
                format!("tls:{PROV}:5061"),
                format!("udp:{PROV}:5060"),
                format!("tcp:{PROV}:5060"),
            ],
            &defines,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let probe = self
                .command("prov", Path::new("bash"))
                .args(["-c", &format!("exec 3<>/dev/tcp/{PROV}/5061")])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if probe.success() {
                return k;
            }
            assert!(
                k.running() && std::time::Instant::now() < deadline,
                "kamailio does not listen on {PROV}:5061:\n{}",
                k.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Makes both NATs drop unsolicited UDP addressed to themselves, as
    /// a home router's input policy does. Without it the lab's NAT answers
    /// such a datagram (ICMP port unreachable) and its conntrack entry
    /// makes masquerade give the home's next mapping towards that sender
    /// another port: the first ICE check to arrive from the peer spoils
    /// the very mapping the answering check needs, and two cone NATs never
    /// connect directly. Dropped before conntrack confirms it, the check
    /// leaves no entry, and the hole punching of RFC 8445 works.
    pub fn nats_drop_unsolicited(&self) {
        for (nat, wan) in [("natA", "wA"), ("natB", "wB")] {
            for cmd in [
                "add table inet home_input".to_string(),
                "add chain inet home_input input { type filter hook input priority 0 ; }".into(),
                format!("add rule inet home_input input iifname {wan} udp dport 1024-65535 ct state new drop"),
            ] {
                let out = self.script(&["exec", nat, "nft", &cmd]);
                assert!(
                    out.status.success(),
                    "{nat}: nft {cmd}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Debian's coturn in `prov` as the STUN server on 3478 (killed when
    /// dropped; the lab's `down` kills it too).
    pub fn stun(&self) -> Child {
        let dir = self.dir.path().join("coturn");
        std::fs::create_dir_all(&dir).unwrap();
        let child = self
            .command("prov", Path::new("turnserver"))
            .args(["-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls"])
            .arg(format!("--listening-ip={PROV}"))
            .arg("--listening-port=3478")
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!("--log-file={}", dir.join("log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (coturn, scripts/install-deps.sh)");
        // It answers within milliseconds; the first request of a phone
        // is retried anyway.
        std::thread::sleep(Duration::from_millis(500));
        child
    }

    /// `ibephone agent` of `user` in `home`, configured as a user would
    /// (listening on a wildcard address; the provider's addresses given
    /// explicitly).
    pub fn phone(&self, home: &str, user: &str, provider: &Provider) -> Agent {
        self.phone_with(home, user, provider, &explicit_provider(), "", &[])
    }

    /// `ibephone agent` of `user` in `home` configured with only what a
    /// user knows: its address, its password and the PKG's fingerprint to
    /// confirm. The PKG and the SIP proxy come from DNS.
    pub fn discovering_phone(&self, home: &str, user: &str, provider: &Provider) -> Agent {
        self.phone_with(home, user, provider, "[pkg]\n", "", &[])
    }

    /// `middle` ends `[sip]` and opens `[pkg]` (with or without the
    /// provider's addresses); `extra` is appended to the configuration
    /// file; `args`: more `ibephone agent` arguments. Without sound devices
    /// (silence in, audio out discarded).
    pub fn phone_with(
        &self,
        home: &str,
        user: &str,
        provider: &Provider,
        middle: &str,
        extra: &str,
        args: &[&str],
    ) -> Agent {
        self.phone_at(
            home,
            user,
            user,
            "0.0.0.0:5062",
            provider,
            middle,
            extra,
            args,
        )
    }

    /// [`Lab::phone_with`] with its files in the lab's directory `name`
    /// and listening on `listen` (two phones of one namespace need two
    /// ports and two directories).
    #[allow(clippy::too_many_arguments)]
    pub fn phone_at(
        &self,
        home: &str,
        name: &str,
        user: &str,
        listen: &str,
        provider: &Provider,
        middle: &str,
        extra: &str,
        args: &[&str],
    ) -> Agent {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_secret(&dir.join("password"), &format!("{user} lab secret\n"));
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[account]\naor = \"sip:{user}@{DOMAIN}\"\npassword_file = \"password\"\n\
                 [sip]\nlisten = \"{listen}\"\n{middle}\
                 fingerprint = \"{}\"\nstore = \"keystore\"\n\
                 [security]\npolicy = \"require\"\nprivacy = true\n{extra}",
                provider.fingerprint
            ),
        )
        .unwrap();
        let mut cmd = self.command(home, Path::new(env!("CARGO_BIN_EXE_ibephone")));
        cmd.args(["agent", "--no-audio", "--config"])
            .arg(&config)
            .args(args);
        let mut a = Agent::spawn(&format!("{user}@{home}"), cmd);
        a.errors_fail = true;
        a
    }
}

/// The `[sip]` tail and `[pkg]` head of a phone that is given the
/// provider's addresses (no discovery).
pub fn explicit_provider() -> String {
    format!("proxy = \"{PROV}:5060\"\n[pkg]\nurl = \"https://{PROV}:8443\"\n")
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!(
                "natlab down {}: {}",
                self.prefix,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The running `pkg-server` of a lab (killed when dropped).
pub struct Provider {
    child: Child,
    /// The PKG's certificate fingerprint (hex), as `pkg-server` printed it.
    pub fingerprint: String,
    /// Its configuration file (for `pkg-admin`).
    pub config: PathBuf,
    /// Its data directory (`tls-cert.pem`, `tls-key.pem`).
    pub data_dir: PathBuf,
}

impl Provider {
    /// Kills the provider's process (a server that dies: its sockets
    /// close, nothing answers on its addresses any more).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `pkg-admin ARGS` on this PKG, which must succeed; its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = run_admin(&bin("pkg-admin"), &self.config, args, "");
        assert!(
            out.status.success(),
            "pkg-admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
