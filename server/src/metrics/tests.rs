//! The shards' sums, the histograms' shape, and the exposition text: parsed
//! line by line here, and checked by `promtool` where it is installed.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::num::NonZeroU64;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use latchkey_protocol::ErrorCode;
use latchkey_protocol::ext::Decision;

use super::render::{Gauges, TOKEN_STATUSES, TokenCounts, count_tokens, start_from_proc, write_exposition};
use super::shard::{BUCKETS, Shard, Shards, Totals, bucket_of, counter, histogram, shards};
use super::*;
use crate::clock::now_us;
use crate::registry::{Mutation, Readers, Replica, TokenRecord};

/// A decision no caller in the server passes: it counts as "other", so no
/// other test in this process moves the series these tests watch.
const TEST_DECISION: &str = "metrics-test";

fn other_decisions() -> u64 {
    shards().totals().counters[counter::authorize(Via::Tcp, AuthorizeOutcome::Other)]
}

#[test]
fn counts_recorded_on_many_threads_add_up_and_outlive_their_threads() {
    const THREADS: u64 = 8;
    const EACH: u64 = 1000;
    let before = other_decisions();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..EACH {
                    authorize(Via::Tcp, TEST_DECISION);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Every thread has ended: their shards were given back, counts and all.
    assert_eq!(other_decisions() - before, THREADS * EACH);
}

#[test]
fn an_ended_threads_shard_is_taken_up_again_with_its_counts() {
    let mut list = Shards::new();
    let first = list.claim();
    first.count(counter::COMPACTIONS);
    list.release(Arc::clone(&first));
    let again = list.claim();
    assert!(Arc::ptr_eq(&first, &again), "a released shard is claimed before a new one is made");
    again.count(counter::COMPACTIONS);
    let other = list.claim();
    other.count_by(counter::COMPACTIONS, 5);
    assert_eq!(list.len(), 2);
    assert_eq!(list.totals().counters[counter::COMPACTIONS], 7);
}

#[test]
fn shards_written_by_their_own_threads_sum_at_scrape() {
    let list = std::sync::Mutex::new(Shards::new());
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let shard = list.lock().unwrap().claim();
            scope.spawn(move || {
                for _ in 0..=thread {
                    shard.count(counter::login(LoginMethod::Token, LoginResult::Ok));
                    shard.observe(histogram::STORE_COMMIT, Duration::from_millis(3));
                }
            });
        }
    });
    let totals = list.lock().unwrap().totals();
    assert_eq!(totals.counters[counter::login(LoginMethod::Token, LoginResult::Ok)], 1 + 2 + 3 + 4);
    let commits = &totals.histograms[histogram::STORE_COMMIT];
    assert_eq!(commits.count(), 10);
    assert_eq!(commits.sum_ns, 10 * 3_000_000);
    // 3 ms falls in the 5 ms bucket (index 6).
    assert_eq!(commits.buckets[6], 10);
}

#[test]
fn a_duration_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
    assert_eq!(bucket_of(0), 0);
    assert_eq!(bucket_of(50_000), 0, "le is inclusive");
    assert_eq!(bucket_of(50_001), 1);
    assert_eq!(bucket_of(1_000_000), 4);
    assert_eq!(bucket_of(10_000_000_000), BUCKETS - 2);
    assert_eq!(bucket_of(10_000_000_001), BUCKETS - 1, "past the last bound: +Inf");
    assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    assert!(BUCKET_BOUNDS_NS.windows(2).all(|pair| pair[0] < pair[1]));
}

/// Totals with something in every family, as after some traffic.
fn busy_totals() -> Box<Totals> {
    let shard = Shard::new();
    for (index, method) in LoginMethod::ALL.iter().enumerate() {
        shard.count_by(counter::login(*method, LoginResult::Ok), 10 + index as u64);
        shard.count(counter::login(*method, LoginResult::Failed));
        shard.count(counter::throttle_refusal(*method));
    }
    shard.count_by(counter::authorize(Via::Http, AuthorizeOutcome::Scope), 4);
    shard.count(counter::http_response(HttpRoute::Introspect, StatusClass::of(404)));
    shard.count(counter::connection_refused(RefusedReason::PerAddress));
    shard.count_by(counter::CHANGES_COMMITTED, 9);
    shard.count_by(counter::BATCHES_COMMITTED, 3);
    shard.count(counter::COMPACTIONS);
    shard.count_by(counter::CONFLICTS, 5);
    shard.count_by(counter::ID_BLOCKS_LEASED, 2);
    let durations = [20_000, 50_000, 700_000, 3_000_000, 40_000_000, 12_000_000_000];
    for ns in durations {
        shard.observe(
            histogram::request(CommandLabel::LoginWithPersonalAccessToken),
            Duration::from_nanos(ns),
        );
        shard.observe(histogram::STORE_COMMIT, Duration::from_nanos(ns));
    }
    shard.observe(histogram::http_request(HttpRoute::Metrics), Duration::from_micros(300));
    let mut totals = Box::new(Totals::zero());
    totals.add(&shard);
    totals
}

fn busy_gauges() -> Gauges {
    Gauges {
        open: [3, 1, 0],
        log_bytes: 4096,
        log_records: 40,
        log_live: 10,
        start_time_seconds: 1_717_000_000.25,
        tokens: [10, 2, 1],
        expiring: 4,
    }
}

fn exposition(totals: &Totals, gauges: &Gauges) -> String {
    let mut out = String::new();
    write_exposition(&mut out, totals, gauges);
    out
}

/// One parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        value => value.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let rest = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
            let labels = rest
                .split(',')
                .map(|pair| {
                    let (label, quoted) =
                        pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line}"));
                    let text = quoted.strip_prefix('"').and_then(|text| text.strip_suffix('"'));
                    (label.to_owned(), text.unwrap_or_else(|| panic!("unquoted value in {line}")).to_owned())
                })
                .collect();
            (name, labels)
        }
    };
    Sample { name: name.to_owned(), labels, value }
}

/// `^[a-zA-Z_:][a-zA-Z0-9_:]*$`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

/// Every value each label may take.
fn closed_sets() -> HashMap<&'static str, HashSet<String>> {
    fn strings<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> HashSet<String> {
        all.iter().map(|value| as_str(*value).to_owned()).collect()
    }
    let mut le: HashSet<String> = BUCKET_BOUNDS_NS.iter().map(|ns| (*ns as f64 / 1e9).to_string()).collect();
    le.insert("+Inf".to_owned());
    HashMap::from([
        ("version", HashSet::from([env!("CARGO_PKG_VERSION").to_owned()])),
        ("framing", strings(ConnKind::ALL, ConnKind::as_str)),
        ("reason", strings(RefusedReason::ALL, RefusedReason::as_str)),
        ("command", strings(CommandLabel::ALL, CommandLabel::as_str)),
        ("method", strings(LoginMethod::ALL, LoginMethod::as_str)),
        ("kind", strings(LoginMethod::ALL, LoginMethod::as_str)),
        ("result", strings(LoginResult::ALL, LoginResult::as_str)),
        ("via", strings(Via::ALL, Via::as_str)),
        ("decision", strings(AuthorizeOutcome::ALL, AuthorizeOutcome::as_str)),
        ("route", strings(HttpRoute::ALL, HttpRoute::as_str)),
        ("code", strings(StatusClass::ALL, StatusClass::as_str)),
        ("status", TOKEN_STATUSES.iter().map(|status| status.as_str().to_owned()).collect()),
        ("le", le),
    ])
}

/// Checks the text line by line and returns its samples by family.
fn check_shape(text: &str) -> HashMap<String, Vec<Sample>> {
    let sets = closed_sets();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
    let mut series_seen: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, words) = help.split_once(' ').expect("HELP has text");
            assert!(!words.trim().is_empty(), "empty HELP for {name}");
            assert!(helped.insert(name.to_owned()), "{name} has two HELP lines");
            continue;
        }
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').expect("TYPE has a type");
            assert!(is_metric_name(name), "bad family name {name}");
            assert!(helped.contains(name), "{name}: TYPE before HELP");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{name}: type {kind}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name}: counters, and only they, end in _total"
            );
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} declared twice");
            current = Some(name.to_owned());
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "stray line {line:?}");
        let sample = parse_sample(line);
        assert!(is_metric_name(&sample.name), "bad sample name {}", sample.name);
        let family = current.clone().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let suffix = sample
            .name
            .strip_prefix(family.as_str())
            .unwrap_or_else(|| panic!("{} is not in the family declared last ({family})", sample.name));
        match types[&family].as_str() {
            "histogram" => assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{}", sample.name),
            _ => assert_eq!(suffix, "", "{}", sample.name),
        }
        for (label, value) in &sample.labels {
            let allowed =
                sets.get(label.as_str()).unwrap_or_else(|| panic!("unknown label {label} in {line}"));
            assert!(allowed.contains(value), "{label}={value:?} is outside its closed set");
            assert!(suffix == "_bucket" || label != "le", "le outside a bucket: {line}");
        }
        assert!(series_seen.insert(line.rsplit_once(' ').unwrap().0.to_owned()), "series twice: {line}");
        samples.entry(family).or_default().push(sample);
    }
    assert_eq!(helped.len(), types.len(), "a HELP without a TYPE");
    for family in types.keys() {
        assert!(samples.contains_key(family), "{family} has no samples");
    }
    samples
}

#[test]
fn the_exposition_parses_into_declared_families_with_closed_label_sets() {
    for (totals, gauges) in
        [(Box::new(Totals::zero()), Gauges::read(TokenCounts::default())), (busy_totals(), busy_gauges())]
    {
        let text = exposition(&totals, &gauges);
        let families = check_shape(&text);
        // Every series is there before any traffic, zeros included.
        let logins = &families["latchkey_logins_total"];
        assert_eq!(logins.len(), LoginMethod::COUNT * LoginResult::COUNT);
        let requests = &families["latchkey_request_duration_seconds"];
        assert_eq!(requests.len(), CommandLabel::COUNT * (BUCKETS + 2));
        let responses = &families["latchkey_http_responses_total"];
        assert_eq!(responses.len(), HttpRoute::COUNT * StatusClass::COUNT);
    }
}

#[test]
fn the_exposition_carries_what_was_recorded() {
    let text = exposition(&busy_totals(), &busy_gauges());
    let families = check_shape(&text);
    let value = |family: &str, labels: &[(&str, &str)]| {
        let found = families[family].iter().find(|sample| {
            sample.name == family
                && labels
                    .iter()
                    .all(|(label, text)| sample.labels.iter().any(|(l, t)| l == label && t == text))
        });
        found.unwrap_or_else(|| panic!("no {family} {labels:?}")).value
    };
    assert_eq!(value("latchkey_logins_total", &[("method", "token"), ("result", "ok")]), 11.0);
    assert_eq!(value("latchkey_authorize_decisions_total", &[("via", "http"), ("decision", "scope")]), 4.0);
    assert_eq!(value("latchkey_http_responses_total", &[("route", "introspect"), ("code", "4xx")]), 1.0);
    assert_eq!(value("latchkey_connections_refused_total", &[("reason", "per_address")]), 1.0);
    assert_eq!(value("latchkey_connections_open", &[("framing", "legacy")]), 3.0);
    assert_eq!(value("latchkey_tokens", &[("status", "expired")]), 2.0);
    assert_eq!(value("latchkey_log_dead_ratio", &[]), 0.75);
    assert_eq!(value("latchkey_log_size_bytes", &[]), 4096.0);
    assert_eq!(value("latchkey_store_batches_committed_total", &[]), 3.0);
    assert_eq!(value("latchkey_store_conflicts_total", &[]), 5.0);
    assert_eq!(value("latchkey_store_id_blocks_leased_total", &[]), 2.0);
    assert_eq!(value("latchkey_build_info", &[]), 1.0);
}

#[test]
fn histogram_buckets_are_cumulative_and_count_is_the_inf_bucket() {
    let text = exposition(&busy_totals(), &busy_gauges());
    let families = check_shape(&text);
    for family in [
        "latchkey_request_duration_seconds",
        "latchkey_http_request_duration_seconds",
        "latchkey_store_commit_duration_seconds",
    ] {
        // Group the family's samples by series (labels other than le).
        let mut by_series: HashMap<Vec<(String, String)>, Vec<&Sample>> = HashMap::new();
        for sample in &families[family] {
            let key = sample.labels.iter().filter(|(label, _)| label != "le").cloned().collect();
            by_series.entry(key).or_default().push(sample);
        }
        for (series, samples) in by_series {
            let buckets: Vec<(&str, f64)> = samples
                .iter()
                .filter(|sample| sample.name.ends_with("_bucket"))
                .map(|sample| {
                    let le = sample.labels.iter().find(|(label, _)| label == "le").expect("le");
                    (le.1.as_str(), sample.value)
                })
                .collect();
            assert_eq!(buckets.len(), BUCKETS, "{family} {series:?}");
            assert!(
                buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1),
                "{family} {series:?}: not cumulative"
            );
            let bounds: Vec<f64> = buckets.iter().map(|(le, _)| le.parse::<f64>().unwrap()).collect();
            assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "{family}: le out of order");
            assert_eq!(buckets.last().unwrap().0, "+Inf");
            let count = samples.iter().find(|sample| sample.name.ends_with("_count")).expect("_count");
            assert_eq!(count.value, buckets.last().unwrap().1, "{family} {series:?}: _count is not +Inf");
            assert!(samples.iter().any(|sample| sample.name.ends_with("_sum")), "{family}: no _sum");
        }
    }
    // The store commits observed above: 20 µs and 50 µs in the first bucket,
    // 12 s only in +Inf, and the sum in seconds.
    let commits = &families["latchkey_store_commit_duration_seconds"];
    let bucket = |le: &str| {
        commits.iter().find(|sample| sample.labels.iter().any(|(l, t)| l == "le" && t == le)).unwrap().value
    };
    assert_eq!(bucket("0.00005"), 2.0);
    assert_eq!(bucket("0.001"), 3.0);
    assert_eq!(bucket("10"), 5.0);
    assert_eq!(bucket("+Inf"), 6.0);
    let sum = commits.iter().find(|sample| sample.name.ends_with("_sum")).unwrap().value;
    assert!((sum - 12.04377).abs() < 1e-9, "sum {sum}");
}

#[test]
fn promtool_accepts_the_exposition() {
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
    else {
        // Not a failure: promtool comes with Prometheus (Debian: `prometheus`).
        eprintln!(
            "SKIPPED promtool_accepts_the_exposition: promtool is not installed. To run it: apt-get install prometheus"
        );
        return;
    };
    for text in [
        exposition(&Totals::zero(), &Gauges::read(TokenCounts::default())),
        exposition(&busy_totals(), &busy_gauges()),
    ] {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    }
}

fn token(id: u64, expiry_at_us: Option<u64>, revoked_at_us: Option<u64>) -> TokenRecord {
    TokenRecord {
        id,
        user_id: 1,
        name: format!("token-{id}").into(),
        hash: [id as u8; 32],
        created_at_us: 1,
        expiry_at_us: expiry_at_us.and_then(NonZeroU64::new),
        revoked_at_us: revoked_at_us.and_then(NonZeroU64::new),
        extras: None,
        last_used: None,
    }
}

#[test]
fn tokens_are_counted_by_status_at_the_scrape() {
    let now = now_us();
    let mut replica = Replica::new();
    for record in [
        token(1, None, None),
        token(2, Some(now + 60_000_000), None),
        token(3, Some(now - 1), None),
        token(4, None, Some(now - 10)),
        // Revoked wins over expired.
        token(5, Some(now - 1), Some(now - 10)),
    ] {
        replica.apply(&Mutation::Create(record));
    }
    let (readers, _publisher) = Readers::new(replica.clone(), replica);
    let counts = count_tokens(&readers, now, 0);
    assert_eq!(TOKEN_STATUSES.map(|status| status.as_str()), ["active", "expired", "revoked"]);
    assert_eq!(counts, TokenCounts { by_status: [2, 1, 2], expiring: 0 });
    // Token 2 expires in a minute: inside a two-minute window, not a 30 s one.
    assert_eq!(count_tokens(&readers, now, 120_000_000).expiring, 1);
    assert_eq!(count_tokens(&readers, now, 30_000_000).expiring, 0);
}

#[test]
fn the_process_start_time_is_in_the_recent_past() {
    let Some(start) = start_from_proc() else {
        eprintln!("SKIPPED the_process_start_time_is_in_the_recent_past: no /proc here");
        return;
    };
    let now = now_us() as f64 / 1e6;
    assert!(start <= now + 1.0 && start > now - 86_400.0, "start {start}, now {now}");
}

#[test]
fn login_results_come_from_the_codes_a_login_answers() {
    assert_eq!(LoginResult::of::<()>(&Ok(())), LoginResult::Ok);
    let cases = [
        (ErrorCode::InvalidCredentials, LoginResult::Failed),
        (ErrorCode::ResourceNotFound, LoginResult::Failed),
        (ErrorCode::InvalidUsername, LoginResult::Invalid),
        (ErrorCode::InvalidPassword, LoginResult::Invalid),
        (ErrorCode::PersonalAccessTokenExpired, LoginResult::Expired),
        (ErrorCode::PersonalAccessTokenRevoked, LoginResult::Revoked),
        (ErrorCode::UserInactive, LoginResult::Inactive),
        (ErrorCode::AddressNotAllowed, LoginResult::Network),
        (ErrorCode::TooManyFailedLogins, LoginResult::Throttled),
        (ErrorCode::StorageUnavailable, LoginResult::Unavailable),
        (ErrorCode::Error, LoginResult::Error),
    ];
    for (code, result) in cases {
        assert_eq!(LoginResult::of::<()>(&Err(code)), result, "{code:?}");
    }
}

#[test]
fn every_protocol_decision_has_its_own_series_and_strangers_count_as_other() {
    let decisions = [
        Decision::Allowed,
        Decision::Unknown,
        Decision::Expired,
        Decision::Revoked,
        Decision::Scope,
        Decision::Network,
        Decision::InactiveUser,
    ];
    for decision in decisions {
        let outcome = AuthorizeOutcome::of_decision(decision.as_str());
        assert_eq!(outcome.as_str(), decision.as_str());
    }
    for refusal in ["throttled", "unavailable", "error"] {
        assert_eq!(AuthorizeOutcome::of_decision(refusal).as_str(), refusal);
    }
    assert_eq!(AuthorizeOutcome::of_decision("alice"), AuthorizeOutcome::Other);
}

#[test]
fn status_codes_fall_in_their_class() {
    let cases =
        [(200, "2xx"), (204, "2xx"), (301, "3xx"), (404, "4xx"), (429, "4xx"), (500, "5xx"), (503, "5xx")];
    for (status, class) in cases {
        assert_eq!(StatusClass::of(status).as_str(), class, "{status}");
    }
}

#[test]
fn label_values_are_distinct_within_each_label() {
    for (label, values) in closed_sets() {
        for value in &values {
            assert!(!value.is_empty() && !value.contains(['"', '\\', '\n']), "{label}={value:?}");
        }
    }
    assert_eq!(closed_sets()["command"].len(), CommandLabel::COUNT);
    assert_eq!(closed_sets()["route"].len(), HttpRoute::COUNT);
    assert_eq!(closed_sets()["result"].len(), LoginResult::COUNT);
}
