//! The exposition text (Prometheus text format 0.0.4): every family with its
//! `# HELP` and `# TYPE`, every series of it, zeros included. Runs at scrape
//! only; it allocates and formats freely.

use std::fmt::{Display, Write};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use latchkey_protocol::ext::TokenStatus;

use super::labels::{
    AuthorizeOutcome, CommandLabel, ConnKind, HttpRoute, LoginMethod, LoginResult, RefusedReason,
    StatusClass, Via,
};
use super::shard::{BUCKET_BOUNDS_NS, HistogramTotals, Totals, counter, histogram, shards};
use super::{LOG_BYTES, LOG_LIVE, LOG_RECORDS, OPEN};
use crate::clock::now_us;
use crate::registry::Readers;

/// `version` of `latchkey_build_info`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Token statuses in the order `latchkey_tokens` lists them.
pub(super) const TOKEN_STATUSES: [TokenStatus; 3] =
    [TokenStatus::Active, TokenStatus::Expired, TokenStatus::Revoked];

/// What a scrape reads besides the shards: the gauges.
pub(super) struct Gauges {
    pub open: [i64; ConnKind::COUNT],
    pub log_bytes: u64,
    pub log_records: u64,
    pub log_live: u64,
    pub start_time_seconds: f64,
    /// In [`TOKEN_STATUSES`] order.
    pub tokens: [u64; TOKEN_STATUSES.len()],
    /// Active tokens that expire within the expiry-warning window.
    pub expiring: u64,
}

impl Gauges {
    /// The gauges now, with the token counts taken by the caller.
    pub(super) fn read(counts: TokenCounts) -> Gauges {
        Gauges {
            open: std::array::from_fn(|index| OPEN[index].load(Ordering::Relaxed)),
            log_bytes: LOG_BYTES.load(Ordering::Relaxed),
            log_records: LOG_RECORDS.load(Ordering::Relaxed),
            log_live: LOG_LIVE.load(Ordering::Relaxed),
            start_time_seconds: process_start_time_seconds(),
            tokens: counts.by_status,
            expiring: counts.expiring,
        }
    }

    /// The share of the log's records that describe no live token.
    fn log_dead_ratio(&self) -> f64 {
        if self.log_records == 0 {
            return 0.0;
        }
        self.log_records.saturating_sub(self.log_live) as f64 / self.log_records as f64
    }
}

/// The whole exposition for one scrape.
pub fn render(registry: &Readers) -> String {
    fail::fail_point!("metrics-render");
    let window_us = super::EXPIRY_WINDOW_US.load(Ordering::Relaxed);
    let gauges = Gauges::read(count_tokens(registry, now_us(), window_us));
    let totals = shards().totals();
    let mut out = String::with_capacity(64 * 1024);
    write_exposition(&mut out, &totals, &gauges);
    out
}

/// The registry's token gauges.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TokenCounts {
    /// In [`TOKEN_STATUSES`] order.
    pub by_status: [u64; TOKEN_STATUSES.len()],
    /// Active tokens whose expiry is at most `window_us` away.
    pub expiring: u64,
}

/// Tokens per status at `now_us`, and the active ones expiring within
/// `window_us`: one pass over the registry, O(n) in tokens, once per
/// scrape, in short reads ([`Readers::scan`]) so that it never holds up the
/// writer's next publish.
pub(super) fn count_tokens(registry: &Readers, now_us: u64, window_us: u64) -> TokenCounts {
    let horizon_us = now_us.saturating_add(window_us);
    let mut counts = TokenCounts::default();
    registry.scan(|entry| {
        let status = entry.status(now_us);
        if let Some(index) = TOKEN_STATUSES.iter().position(|listed| *listed == status) {
            counts.by_status[index] += 1;
        }
        let soon = entry.expiry_at_us.is_some_and(|at| at.get() <= horizon_us);
        if status == TokenStatus::Active && soon {
            counts.expiring += 1;
        }
    });
    counts
}

/// Writes every family, in a fixed order.
pub(super) fn write_exposition(out: &mut String, totals: &Totals, gauges: &Gauges) {
    let mut text = Text(out);
    let counters = &totals.counters;

    text.family("latchkey_build_info", "gauge", "Always 1; the version label names the running build.");
    text.sample("latchkey_build_info", &[("version", VERSION)], 1);

    let name = "latchkey_process_start_time_seconds";
    text.family(name, "gauge", "When the server process started, in seconds since the Unix epoch.");
    text.sample(name, &[], gauges.start_time_seconds);

    let name = "latchkey_connections_open";
    text.family(name, "gauge", "Connections open now, by framing, counted once the framing is known.");
    for kind in ConnKind::ALL {
        text.sample(name, &[("framing", kind.as_str())], gauges.open[kind.index()]);
    }

    let name = "latchkey_connections_refused_total";
    let help = "Connections refused at accept by a connection limit, on the binary and HTTP listeners alike.";
    text.family(name, "counter", help);
    for reason in RefusedReason::ALL {
        let value = counters[counter::connection_refused(*reason)];
        text.sample(name, &[("reason", reason.as_str())], value);
    }

    let name = "latchkey_request_duration_seconds";
    text.family(
        name,
        "histogram",
        "TCP requests by command: from taking up the request's bytes to its reply.",
    );
    for command in CommandLabel::ALL {
        let series = &totals.histograms[histogram::request(*command)];
        text.histogram(name, Some(("command", command.as_str())), series);
    }

    let name = "latchkey_logins_total";
    text.family(name, "counter", "Logins finished, by method and result.");
    for method in LoginMethod::ALL {
        for result in LoginResult::ALL {
            let value = counters[counter::login(*method, *result)];
            text.sample(name, &[("method", method.as_str()), ("result", result.as_str())], value);
        }
    }

    let name = "latchkey_authorize_decisions_total";
    text.family(name, "counter", "Authorize requests answered, by front door and decision.");
    for via in Via::ALL {
        for decision in AuthorizeOutcome::ALL {
            let value = counters[counter::authorize(*via, *decision)];
            text.sample(name, &[("via", via.as_str()), ("decision", decision.as_str())], value);
        }
    }

    let name = "latchkey_throttle_refusals_total";
    text.family(name, "counter", "Login attempts the failed-login throttle refused, by kind of login.");
    for kind in LoginMethod::ALL {
        text.sample(name, &[("kind", kind.as_str())], counters[counter::throttle_refusal(*kind)]);
    }

    let name = "latchkey_http_request_duration_seconds";
    text.family(name, "histogram", "HTTP requests by route: from the parsed request to its response.");
    for route in HttpRoute::ALL {
        let series = &totals.histograms[histogram::http_request(*route)];
        text.histogram(name, Some(("route", route.as_str())), series);
    }

    let name = "latchkey_http_responses_total";
    text.family(name, "counter", "HTTP responses sent, by route and status class.");
    for route in HttpRoute::ALL {
        for code in StatusClass::ALL {
            let value = counters[counter::http_response(*route, *code)];
            text.sample(name, &[("route", route.as_str()), ("code", code.as_str())], value);
        }
    }

    let name = "latchkey_store_changes_committed_total";
    text.family(name, "counter", "Token changes the store made durable and answered as done.");
    text.sample(name, &[], counters[counter::CHANGES_COMMITTED]);

    let name = "latchkey_store_batches_committed_total";
    text.family(
        name,
        "counter",
        "Batches the store made durable (one log write and sync each, or one etcd transaction).",
    );
    text.sample(name, &[], counters[counter::BATCHES_COMMITTED]);

    let name = "latchkey_store_commit_failures_total";
    let help =
        "Log writes, syncs or compaction installs that failed; changes are then refused until a restart.";
    text.family(name, "counter", help);
    text.sample(name, &[], counters[counter::COMMIT_FAILURES]);

    let name = "latchkey_store_commit_duration_seconds";
    text.family(name, "histogram", "Time to write and sync one batch to the log.");
    text.histogram(name, None, &totals.histograms[histogram::STORE_COMMIT]);

    let name = "latchkey_store_conflicts_total";
    let help = "Cluster mode: etcd transactions that lost a race (a compare failed) and were checked again.";
    text.family(name, "counter", help);
    text.sample(name, &[], counters[counter::CONFLICTS]);

    let name = "latchkey_store_id_blocks_leased_total";
    text.family(name, "counter", "Cluster mode: blocks of token ids leased from etcd's id counter.");
    text.sample(name, &[], counters[counter::ID_BLOCKS_LEASED]);

    let name = "latchkey_log_size_bytes";
    text.family(name, "gauge", "Size of the token log file (0 in cluster mode).");
    text.sample(name, &[], gauges.log_bytes);

    let name = "latchkey_log_records";
    text.family(name, "gauge", "Records in the token log file (0 in cluster mode).");
    text.sample(name, &[], gauges.log_records);

    let name = "latchkey_log_dead_ratio";
    text.family(name, "gauge", "Share of the log's records that no longer describe a live token (0 to 1).");
    text.sample(name, &[], gauges.log_dead_ratio());

    let name = "latchkey_log_compactions_total";
    text.family(name, "counter", "Compactions of the token log installed since start.");
    text.sample(name, &[], counters[counter::COMPACTIONS]);

    let name = "latchkey_tokens";
    text.family(name, "gauge", "Tokens in the registry, by status.");
    for (status, count) in TOKEN_STATUSES.iter().zip(gauges.tokens) {
        text.sample(name, &[("status", status.as_str())], count);
    }

    let name = "latchkey_tokens_expiring";
    text.family(
        name,
        "gauge",
        "Active tokens that expire within [personal_access_token] expiry_warning_window.",
    );
    text.sample(name, &[], gauges.expiring);
}

/// Appends exposition lines. Writing to a `String` cannot fail.
struct Text<'a>(&'a mut String);

impl Text<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line. Label values come from closed sets and need no
    /// escaping.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        for (index, (label, text)) in labels.iter().enumerate() {
            debug_assert!(!text.contains(['"', '\\', '\n']), "label value {text:?} needs escaping");
            let _ = write!(self.0, "{}{label}=\"{text}\"", if index == 0 { '{' } else { ',' });
        }
        if !labels.is_empty() {
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One histogram series: cumulative buckets with `+Inf`, then `_sum`
    /// (seconds) and `_count`.
    fn histogram(&mut self, name: &str, label: Option<(&str, &str)>, series: &HistogramTotals) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound_ns, count) in BUCKET_BOUNDS_NS.iter().zip(&series.buckets) {
            cumulative = cumulative.wrapping_add(*count);
            let le = seconds(*bound_ns).to_string();
            self.sample(&bucket_name, &with_le(label, &le), cumulative);
        }
        let count = series.count();
        self.sample(&bucket_name, &with_le(label, "+Inf"), count);
        let labels: Vec<(&str, &str)> = label.into_iter().collect();
        self.sample(&format!("{name}_sum"), &labels, seconds(series.sum_ns));
        self.sample(&format!("{name}_count"), &labels, count);
    }
}

fn with_le<'a>(label: Option<(&'a str, &'a str)>, le: &'a str) -> Vec<(&'a str, &'a str)> {
    label.into_iter().chain([("le", le)]).collect()
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// When this process started, in seconds since the Unix epoch: from
/// `/proc` where there is one, else when it was first asked (close to the
/// start: the server's first scrape).
fn process_start_time_seconds() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| start_from_proc().unwrap_or_else(|| now_us() as f64 / 1e6))
}

/// Clock ticks per second in `/proc`'s times: Linux fixes USER_HZ at 100
/// for what it exports, whatever the kernel's own tick (Prometheus's own
/// process collector assumes the same).
const PROC_TICKS_PER_SECOND: f64 = 100.0;

/// The boot time from `/proc/stat` plus the process's start from
/// `/proc/self/stat` (field 22, in ticks after boot).
pub(super) fn start_from_proc() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses; the last
    // ')' ends it, and field 3 starts two bytes later.
    let fields = stat.get(stat.rfind(')')? + 2..)?;
    let start_ticks: u64 = fields.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let boot_seconds: u64 = boot.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(boot_seconds as f64 + start_ticks as f64 / PROC_TICKS_PER_SECOND)
}
