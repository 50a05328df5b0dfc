//! The desktop app in a real window, brought to one scene for
//! `scripts/screenshots.sh`: a provider (PKG and registrar) runs in this
//! process; `alice` is the window, `bob` a headless agent.
//!
//! `cargo run --example ui-screens -- SCENE` with SCENE one of `wizard`,
//! `confirm`, `phone`, `incoming`, `call`. Prints `SCENE-READY` on stdout
//! once the window shows the scene.
// An example has no public API: its `pub` items are for its own modules.
#![allow(unreachable_pub)]

#[path = "../tests/ui_support/mod.rs"]
mod ui_support;

use ibephone::agent::config::AgentConfig;
use ibephone::agent::filter::SecurityPolicy;
use ibephone::agent::{AgentCommand, AgentEvent};
use ibephone::ibe::Period;
use ibephone::ui::app::{Phase, Screen};
use ibephone::ui::{AppDirs, PhoneApp};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ui_support::*;

struct Scene {
    app: PhoneApp,
    scene: String,
    announced: bool,
    answered: bool,
    bob: Option<tokio::sync::mpsc::Sender<AgentCommand>>,
    called: bool,
}

impl Scene {
    fn reached(&self) -> bool {
        let a = &self.app;
        match self.scene.as_str() {
            "wizard" => a.screen == Screen::Wizard,
            "confirm" => matches!(a.wizard.step, ibephone::ui::wizard::Step::Confirm(_)),
            "phone" => {
                a.screen == Screen::Phone
                    && matches!(
                        a.registration,
                        ibephone::ui::app::Registration::Registered { .. }
                    )
            }
            "incoming" => a.calls.iter().any(|c| c.phase == Phase::Incoming),
            "call" => a.calls.iter().any(|c| matches!(c.phase, Phase::Active(_))),
            _ => false,
        }
    }
}

impl eframe::App for Scene {
    fn update(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        let registered = matches!(
            self.app.registration,
            ibephone::ui::app::Registration::Registered { .. }
        );
        if registered && !self.called {
            if let Some(bob) = &self.bob {
                let _ = bob.try_send(AgentCommand::Call { to: "alice".into() });
                self.called = true;
            }
        }
        if self.scene == "call" && !self.answered {
            if let Some(c) = self.app.calls.iter().find(|c| c.phase == Phase::Incoming) {
                self.app.command(AgentCommand::Answer { call: c.id });
                self.answered = true;
            }
        }
        self.app.show(ctx);
        if !self.announced && self.reached() {
            self.announced = true;
            println!("SCENE-READY");
            let _ = std::io::stdout().flush();
        }
        ctx.request_repaint_after(Duration::from_millis(200));
    }
}

fn main() -> anyhow::Result<()> {
    let scene = std::env::args().nth(1).unwrap_or_else(|| "wizard".into());
    let p = Provider::start();
    let dir = tempfile::tempdir()?;
    let dirs = AppDirs::at(dir.path());
    if scene != "wizard" && scene != "confirm" {
        // Set alice up through the wizard, headless; the window then
        // starts from the stored keys as on any later start.
        let mut h = phone(dirs.clone());
        set_up(&mut h, &p, "alice", ALICE_PW);
    }
    let bob = if scene == "incoming" || scene == "call" {
        let client = ibephone::pkg_client::PkgClient::new(&p.url, Some(p.fingerprint))?;
        let proxy = p.proxy;
        let running = p.rt.block_on(async move {
            let params = client.params().await?;
            let session = client.login("bob", &secret(BOB_PW)).await?;
            // bob registers with his device's credential, as any phone.
            let sip = client.sip_credentials(&session, "screens").await?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let keys = client
                .fetch_keys(&session, &params, &[Period::month_at(now)])
                .await?;
            let mut agent = ibephone::agent::headless::start(AgentConfig {
                aor: session.aor.clone(),
                password: zeroize::Zeroizing::new(sip.password.expose().to_string()),
                listen: "127.0.0.1:0".parse()?,
                proxy,
                policy: SecurityPolicy::Require,
                privacy: true,
                params,
                trusted: vec![],
                keys,
                sip: ibephone::agent::config::SipSettings::default(),
            })
            .await?;
            agent.commands.send(AgentCommand::Register).await?;
            let commands = agent.commands.clone();
            tokio::spawn(async move {
                while let Some(e) = agent.events.recv().await {
                    if let AgentEvent::Error { message } = e {
                        eprintln!("bob: {message}");
                    }
                }
            });
            anyhow::Ok(commands)
        })?;
        Some(running)
    } else {
        None
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("ibephone")
            .with_inner_size([760.0, 560.0]),
        ..Default::default()
    };
    let url = p.url.clone();
    let proxy = p.proxy.to_string();
    let proxy2 = proxy.clone();
    eframe::run_native(
        "ibephone",
        options,
        Box::new(move |cc| {
            let mut app = PhoneApp::new(dirs, cc.egui_ctx.clone())?;
            if scene == "wizard" || scene == "confirm" {
                app.wizard.url = url.clone();
                app.wizard.address = "alice@atlanta.invalid".into();
                *app.wizard.password = ALICE_PW.into();
                app.wizard.sip_proxy = proxy;
            }
            if scene == "confirm" {
                app.wizard.step = ibephone::ui::wizard::Step::Probing;
                app.request(ibephone::ui::backend::Request::Probe {
                    address: "alice@atlanta.invalid".into(),
                    url,
                    sip_proxy: proxy2,
                });
            }
            Ok(Box::new(Scene {
                app,
                scene,
                announced: false,
                answered: false,
                bob,
                called: false,
            }))
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(p);
    Ok(())
}
