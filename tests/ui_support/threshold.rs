//! A 2-of-3 threshold provider for the desktop-app tests (pkg-api.md
//! "Threshold provider"): three `pkg-server`s of the library, in-process on
//! the loopback, dealt as `pkg-admin init --threshold 2/3` deals them, with
//! alice and bob added at each server with that server's own login secret.
//! Servers are started one by one, so a test can leave one down or put a
//! lying one in its place ([`ThresholdProvider::rogue_third`]).

use super::{ALICE_PW, BOB_PW, DOMAIN};
use ibephone::pkg_client::threshold::login_secret;
use std::path::PathBuf;

/// Three dealt server directories and the servers started so far.
pub struct ThresholdProvider {
    /// Server i+1's URL (`https://127.0.0.1:PORT`).
    pub urls: Vec<String>,
    configs: Vec<pkg_server::config::Config>,
    paths: Vec<PathBuf>,
    _dirs: Vec<tempfile::TempDir>,
    /// Server i+1's stop switch while it runs.
    stops: Vec<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Server i+1's certificate fingerprint, once started.
    pub fingerprints: Vec<Option<[u8; 32]>>,
    /// The embedded relay's allocation counts, once a server that runs
    /// one ([`ThresholdProvider::deal_with_relay`]) is started.
    pub relay: Option<pkg_server::turn::policy::Quotas>,
    pub rt: tokio::runtime::Runtime,
}

/// A free TCP port on the loopback (closed again; a server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ThresholdProvider {
    /// Deals 2-of-3 on three free ports; nothing is started.
    pub fn deal() -> ThresholdProvider {
        let ports = [free_port(), free_port(), free_port()];
        ThresholdProvider::deal_on(&ports, None, "")
    }

    /// As [`ThresholdProvider::deal`], server 1 (the home server) also
    /// running the embedded STUN/TURN relay on the loopback (relaying
    /// between loopback peers allowed), announced as its STUN server.
    pub fn deal_with_relay() -> ThresholdProvider {
        let ports = [free_port(), free_port(), free_port()];
        let relay = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let extra = format!(
            "[services]\nstun = [\"stun:127.0.0.1:{relay}\"]\n[turn]\nlisten = \"127.0.0.1:{relay}\"\nallowed_peer_ips = [\"127.0.0.1\"]\n"
        );
        ThresholdProvider::deal_on(&ports, None, &extra)
    }

    /// A second dealing on `honest`'s ports whose server 3 shows honest
    /// server 3's certificate (it passes the phone's pin) but holds a
    /// share of another secret: it answers wrong key shares.
    pub fn rogue_third(honest: &ThresholdProvider) -> ThresholdProvider {
        let ports: Vec<u16> = honest
            .urls
            .iter()
            .map(|u| u.rsplit_once(':').unwrap().1.parse().unwrap())
            .collect();
        let cert = (honest.configs[2].cert_path(), honest.configs[2].key_path());
        ThresholdProvider::deal_on(&ports, Some(cert), "")
    }

    /// Deals on `ports`; server 3 shows `third_cert` if given; server 1's
    /// `pkg.toml` ends with `home_extra` (sections).
    fn deal_on(
        ports: &[u16],
        third_cert: Option<(PathBuf, PathBuf)>,
        home_extra: &str,
    ) -> ThresholdProvider {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut dirs = Vec::new();
        let mut paths = Vec::new();
        let mut configs = Vec::new();
        let mut urls = Vec::new();
        for (k, port) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pkg.toml");
            let url = format!("https://127.0.0.1:{port}");
            let extra = if k == 0 { home_extra } else { "" };
            std::fs::write(
                &path,
                format!(
                    "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\npkg_url = \"{url}\"\n[argon2]\nm_kib = 1024\nt = 1\np = 1\n{extra}",
                    dir.path().display()
                ),
            )
            .unwrap();
            configs.push(pkg_server::config::Config::load(&path).unwrap());
            paths.push(path);
            dirs.push(dir);
            urls.push(url);
        }
        if let Some((cert, key)) = third_cert {
            std::fs::copy(cert, configs[2].cert_path()).unwrap();
            std::fs::copy(key, configs[2].key_path()).unwrap();
        }
        rt.block_on(async {
            pkg_server::admin::init_threshold(&configs[0], DOMAIN, "2/3", &paths[1..])
                .await
                .unwrap();
            for (k, config) in configs.iter().enumerate() {
                let index = k as u32 + 1;
                let store = pkg_server::admin::open_store(config).await.unwrap();
                let vault = pkg_server::vault::Vault::unlock(config, &store)
                    .await
                    .unwrap();
                let store = store.with_ha1_key(vault.ha1_key());
                for (user, pw) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
                    let secret = login_secret(&pw.into(), DOMAIN, index).unwrap();
                    let rec = pkg_server::password::hash_password(
                        user,
                        DOMAIN,
                        secret.expose(),
                        &config.argon2,
                    )
                    .unwrap();
                    store.user_add(user, &rec, 0).await.unwrap();
                }
            }
        });
        ThresholdProvider {
            urls,
            configs,
            paths,
            _dirs: dirs,
            stops: vec![None, None, None],
            fingerprints: vec![None; 3],
            relay: None,
            rt,
        }
    }

    /// Starts server `index` (1..=3) on its port; returns its certificate
    /// fingerprint.
    pub fn start(&mut self, index: usize) -> [u8; 32] {
        self.start_serving(index, None).0
    }

    /// Starts server `index` (1..=3) with its embedded SIP registrar on a
    /// free loopback port; returns the registrar's address.
    pub fn start_with_sip(&mut self, index: usize) -> std::net::SocketAddr {
        self.start_serving(index, Some("127.0.0.1:0".into()))
            .1
            .expect("the registrar runs")
    }

    fn start_serving(
        &mut self,
        index: usize,
        sip: Option<String>,
    ) -> ([u8; 32], Option<std::net::SocketAddr>) {
        let config = self.configs[index - 1].clone();
        let started = self
            .rt
            .block_on(async { pkg_server::serve::start(config, None, sip).await.unwrap() });
        let registrar = started.sip.as_ref().map(|s| s.addr);
        if let Some(t) = started.turn.as_ref() {
            self.relay = Some(t.quotas.clone());
        }
        let fp = started.fingerprint;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.rt.spawn(started.serve(async move {
            let _ = stopped.await;
        }));
        self.stops[index - 1] = Some(stop);
        self.fingerprints[index - 1] = Some(fp);
        (fp, registrar)
    }

    /// Stops server `index` (1..=3): its port refuses connections.
    pub fn stop(&mut self, index: usize) {
        if let Some(stop) = self.stops[index - 1].take() {
            let _ = stop.send(());
        }
        // The listener is gone once a connection to it is refused.
        let port: u16 = self.urls[index - 1]
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "server {index} still listens"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Enrols `user` in the second factor at server `index` (each server
    /// has its own seed) and returns that seed.
    pub fn enrol_otp(&self, index: usize, user: &str) -> pkg_server::otp::Seed {
        let config = &self.configs[index - 1];
        self.rt.block_on(async {
            let store = pkg_server::admin::open_store(config).await.unwrap();
            let vault = pkg_server::vault::Vault::unlock(config, &store)
                .await
                .unwrap();
            let store = store.with_otp_key(vault.otp_key());
            let seed = pkg_server::otp::Seed::generate().unwrap();
            store.otp_set(user, &seed).await.unwrap();
            seed
        })
    }
}
