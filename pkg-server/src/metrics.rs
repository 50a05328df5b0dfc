//! `/metrics` in the Prometheus text format (prometheus-client): logins by
//! outcome, keys issued, request latency. Counters only; no labels carry
//! user names or addresses.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Successful logins.
    pub logins_ok: Counter,
    /// Failed logins (bad password, unknown user, disabled, throttled).
    pub logins_failed: Counter,
    /// Private keys issued (one per identity and period).
    pub keys_issued: Counter,
    /// TURN credentials issued.
    pub turn_credentials: Counter,
    /// Request latency in seconds.
    pub latency: Histogram,
}

impl Metrics {
    /// Registers all metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let logins_ok = Counter::default();
        let logins_failed = Counter::default();
        let keys_issued = Counter::default();
        let turn_credentials = Counter::default();
        let latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register("pkg_logins_ok", "Successful logins", logins_ok.clone());
        registry.register("pkg_logins_failed", "Failed logins", logins_failed.clone());
        registry.register(
            "pkg_keys_issued",
            "Private keys issued",
            keys_issued.clone(),
        );
        registry.register(
            "pkg_turn_credentials_issued",
            "TURN credentials issued",
            turn_credentials.clone(),
        );
        registry.register(
            "pkg_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        Metrics {
            registry,
            logins_ok,
            logins_failed,
            keys_issued,
            turn_credentials,
            latency,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
