//! `latchkey-bench`: measures Latchkey (or any server speaking Iggy's legacy
//! framing, and Latchkey's HTTP forward auth) honestly, next to baselines
//! taken on the same machine in the same session. See BENCHMARKS.md for the
//! figures and exact commands.

// OS calls go through rustix's safe wrappers (sys.rs); nothing here needs unsafe.
#![forbid(unsafe_code)]

mod attack;
mod disk;
#[cfg(feature = "etcd")]
mod etcd_direct;
mod forward;
mod http_null_server;
mod load;
mod null_server;
mod propagation;
mod report;
mod scale;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::load::{Scenario, Target, Timing};

#[derive(Parser)]
#[command(name = "latchkey-bench", version, about = "Benchmarks for Latchkey and its baselines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| error.to_string())
}

// Parsed once at start; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run scenarios against a server (and optionally a baseline).
    Run {
        /// Server under test (its binary protocol; see --http-addr for HTTP).
        /// Several (the nodes of a cluster): connections go round-robin over
        /// them, and setup is done on the first.
        #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "127.0.0.1:8090")]
        addr: Vec<SocketAddr>,
        /// Label for the server under test in the output.
        #[arg(long, default_value = "latchkey")]
        label: String,
        /// A baseline (e.g. `latchkey-bench null-server`), measured in the
        /// same session, interleaved run by run; ratios are against it.
        #[arg(long)]
        baseline: Option<SocketAddr>,
        #[arg(long, default_value = "null")]
        baseline_label: String,
        /// HTTP address of the server under test, for HTTP scenarios
        /// (`forward-auth`); plaintext. Its token is issued there over REST
        /// with --user and --pass, and deleted after the run.
        #[arg(long, default_value = "127.0.0.1:8091")]
        http_addr: SocketAddr,
        /// The HTTP baseline for HTTP scenarios (`latchkey-bench
        /// http-null-server`), interleaved run by run like --baseline; it is
        /// sent the same requests.
        #[arg(long)]
        baseline_http: Option<SocketAddr>,
        #[arg(long, default_value = "null-http")]
        baseline_http_label: String,
        /// PID of the HTTP baseline server, for its CPU use.
        #[arg(long)]
        baseline_http_pid: Option<u32>,
        #[arg(long, default_value = "iggy")]
        user: String,
        #[arg(long, default_value = "iggy")]
        pass: String,
        #[arg(long, value_enum, value_delimiter = ',', default_value = "login")]
        scenarios: Vec<Scenario>,
        /// Connection counts, e.g. 1,16,64.
        #[arg(long, value_delimiter = ',', default_value = "16")]
        connections: Vec<usize>,
        /// Requests in flight per connection (pipelining depth).
        #[arg(long, default_value_t = 1)]
        depth: usize,
        #[arg(long, value_parser = duration, default_value = "5s")]
        duration: Duration,
        #[arg(long, value_parser = duration, default_value = "1s")]
        warmup: Duration,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// PID of the server under test (both doors), for its CPU use.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Framing of the measured load: `legacy` or `0.11` (setup is legacy;
        /// the server serves both on one port).
        #[arg(long, value_enum, default_value = "legacy")]
        framing: load::Framing,
        /// Local address to connect from (e.g. 127.0.0.2, so the server
        /// sees honest clients apart from an attack on 127.0.0.1).
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Connect over TLS, trusting the PEM certificate(s) in this file
        /// (the server under test only; the null server is plaintext).
        #[arg(long, value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        /// Server name asked for in the TLS handshake.
        #[arg(long, default_value = "localhost")]
        tls_domain: String,
        /// PID of the baseline server, for its CPU use.
        #[arg(long)]
        baseline_pid: Option<u32>,
        /// Print one JSON line per scenario and connection count.
        #[arg(long)]
        json: bool,
        /// Draw throughput and p99 against connections into this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Serve the same framing and do no work at all: the physical limit.
    NullServer {
        #[arg(long, default_value = "127.0.0.1:8091")]
        addr: SocketAddr,
        #[arg(long, value_enum, default_value = "multi-thread")]
        shape: null_server::Shape,
        /// Worker threads (multi-thread) or runtimes (per-core); 0 = cores.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Answer every HTTP request 200 with a small fixed body, kept alive, on
    /// hyper (as Latchkey's HTTP side): the HTTP scenarios' baseline.
    HttpNullServer {
        #[arg(long, default_value = "127.0.0.1:8092")]
        addr: SocketAddr,
        /// Worker threads; 0 = cores.
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// One writer: append + fdatasync per record, on DIR's disk.
    Disk {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        record_bytes: usize,
        #[arg(long, value_parser = duration, default_value = "5s")]
        duration: Duration,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Create many tokens, then report the server's RSS per token.
    Fill {
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        #[arg(long, default_value = "iggy")]
        user: String,
        #[arg(long, default_value = "iggy")]
        pass: String,
        #[arg(long, default_value_t = 1_000_000)]
        tokens: u64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        depth: usize,
        #[arg(long)]
        server_pid: Option<u32>,
        /// Token names are PREFIX<connection>-<n>; a second fill on the same
        /// user needs another prefix.
        #[arg(long, default_value = "f")]
        prefix: String,
        /// Each token's lifetime (e.g. `2m`); without it, tokens never expire.
        #[arg(long, value_parser = duration)]
        lifetime: Option<Duration>,
    },
    /// Durable writes one after another (create, delete, create, …) on a few
    /// connections: p50, p99 and the maximum of their round trips, and when
    /// the slowest began. Run it while the server compacts or purges.
    CommitLatency {
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        #[arg(long, default_value = "iggy")]
        user: String,
        #[arg(long, default_value = "iggy")]
        pass: String,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, value_parser = duration, default_value = "20s")]
        duration: Duration,
        /// Writes begun this soon after the start are not counted.
        #[arg(long, value_parser = duration, default_value = "1s")]
        warmup: Duration,
    },
    /// Hostile clients (garbage, truncated, oversized, one byte per second)
    /// against ADDR for a bounded time: the soak test's attack side.
    Attack {
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 400)]
        connections: usize,
        #[arg(long, value_parser = duration, default_value = "20s")]
        duration: Duration,
    },
    /// Cluster mode: revoke on one node, time until the others refuse.
    Propagation {
        /// The node that creates and revokes.
        #[arg(long)]
        writer: SocketAddr,
        /// The nodes that must stop accepting the token.
        #[arg(long, value_delimiter = ',', required = true)]
        readers: Vec<SocketAddr>,
        #[arg(long, default_value = "iggy")]
        user: String,
        #[arg(long, default_value = "iggy")]
        pass: String,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// Cluster mode: churn (create + delete) through Latchkey's nodes against
    /// the same transactions sent to their etcd directly, interleaved run by
    /// run: Latchkey, etcd with the shared id counter and count, etcd with
    /// nothing shared.
    #[cfg(feature = "etcd")]
    EtcdChurn(EtcdChurnArgs),
    /// Hold many idle connections, then report the server's RSS per connection.
    Idle {
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, value_parser = duration, default_value = "2s")]
        hold: Duration,
        #[arg(long)]
        server_pid: Option<u32>,
    },
}

/// `etcd-churn`'s arguments.
#[cfg(feature = "etcd")]
#[derive(clap::Args)]
struct EtcdChurnArgs {
    /// Latchkey node(s) of the cluster; connections go round-robin over
    /// them, setup on the first.
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    addr: Vec<SocketAddr>,
    /// The same cluster's etcd client endpoints (host:port,...).
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    etcd: Vec<String>,
    /// Where the direct runs write: apart from the nodes' prefix, so
    /// their watches see none of it. Cleared before the first run.
    #[arg(long, default_value = "/latchkey-bench-direct/")]
    prefix: String,
    /// Label for the Latchkey side in the output.
    #[arg(long, default_value = "latchkey")]
    label: String,
    #[arg(long, default_value = "iggy")]
    user: String,
    #[arg(long, default_value = "iggy")]
    pass: String,
    /// Each Latchkey connection churns the tokens of a user of its own:
    /// connection n logs in as this prefix followed by n (users 0 to the
    /// largest connection count less one must be in the nodes' config),
    /// with --own-users-pass. Without it, every connection is --user's.
    #[arg(long)]
    own_users: Option<String>,
    #[arg(long, default_value = "bench-user-pass")]
    own_users_pass: String,
    /// Connection counts (Latchkey) = client loops (etcd), e.g. 1,16,64.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    connections: Vec<usize>,
    #[arg(long, value_parser = duration, default_value = "3s")]
    duration: Duration,
    #[arg(long, value_parser = duration, default_value = "1s")]
    warmup: Duration,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// PIDs of the etcd members: their CPU over each whole run
    /// (warm-up included), summed, in cores.
    #[arg(long, value_delimiter = ',')]
    etcd_pids: Vec<u32>,
    /// PIDs of the Latchkey nodes: their CPU likewise.
    #[arg(long, value_delimiter = ',')]
    node_pids: Vec<u32>,
    /// Print one JSON line per side and connection count.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latchkey-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run(cli: Cli) -> std::io::Result<()> {
    match cli.command {
        Command::Propagation { writer, readers, user, pass, rounds } => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(propagation::run(writer, &readers, &user, &pass, rounds))
        }
        #[cfg(feature = "etcd")]
        Command::EtcdChurn(args) => etcd_churn(args),
        Command::NullServer { addr, shape, threads } => {
            null_server::run(addr, shape, if threads == 0 { cores() } else { threads })
        }
        Command::HttpNullServer { addr, threads } => {
            http_null_server::run(addr, if threads == 0 { cores() } else { threads })
        }
        Command::Disk { dir, record_bytes, duration, runs } => {
            let mut results = Vec::new();
            for index in 0..runs {
                let result = disk::run(&dir, record_bytes, duration)?;
                println!(
                    "  run {index}: {:.0} records/s  p50 {} µs  p99 {} µs",
                    result.records_per_sec, result.p50_us, result.p99_us
                );
                results.push(result);
            }
            results.sort_by(|a, b| a.records_per_sec.total_cmp(&b.records_per_sec));
            let median = &results[results.len() / 2];
            println!(
                "disk (append {record_bytes} B + fdatasync, 1 writer, {}): median {:.0} records/s  p50 {} µs  p99 {} µs",
                dir.display(),
                median.records_per_sec,
                median.p50_us,
                median.p99_us
            );
            Ok(())
        }
        Command::CommitLatency { addr, user, pass, connections, duration, warmup } => {
            let result = scale::commit_latency(addr, &user, &pass, connections, duration, warmup)?;
            println!(
                "commit-latency: {} writes counted in {:.1} s ({} errors): p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs (began at {:.2} s)",
                result.writes,
                result.elapsed.as_secs_f64(),
                result.errors,
                result.quantile_us(0.5),
                result.quantile_us(0.99),
                result.quantile_us(0.999),
                result.latencies_us.last().copied().unwrap_or(0),
                result.slowest_at.as_secs_f64()
            );
            Ok(())
        }
        Command::Fill { addr, user, pass, tokens, connections, depth, server_pid, prefix, lifetime } => {
            let before = server_pid.and_then(sys::process_rss);
            let expiry_us = lifetime.map_or(u64::MAX, |lifetime| lifetime.as_micros() as u64);
            let shape = scale::FillTokens { prefix, expiry_us };
            let result = scale::fill(addr, &user, &pass, tokens, connections, depth, &shape)?;
            // Let allocator and page state settle before sampling.
            std::thread::sleep(Duration::from_millis(500));
            let after = server_pid.and_then(sys::process_rss);
            println!(
                "fill: created {} tokens ({} refused) in {:.1} s = {:.0} creates/s",
                result.created,
                result.refused,
                result.elapsed.as_secs_f64(),
                result.created as f64 / result.elapsed.as_secs_f64()
            );
            if let (Some(before), Some(after)) = (before, after) {
                println!(
                    "server RSS {:.1} MiB → {:.1} MiB: {:.0} bytes per token (all shards and the writer together)",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    after.saturating_sub(before) as f64 / result.created.max(1) as f64
                );
            }
            Ok(())
        }
        Command::Attack { addr, connections, duration } => {
            let stats = attack::run(addr, connections, duration)?;
            println!(
                "attack: {connections} hostile connections for {:.0} s: {} connections opened, {:.1} MiB sent",
                duration.as_secs_f64(),
                stats.connections_opened,
                stats.bytes_sent as f64 / 1048576.0
            );
            Ok(())
        }
        Command::Idle { addr, connections, hold, server_pid } => {
            let result = scale::idle(addr, connections, hold, server_pid)?;
            match (result.rss_before, result.rss_after) {
                (Some(before), Some(after)) => println!(
                    "idle: {} connections; server RSS {:.1} MiB → {:.1} MiB: {:.0} bytes per connection",
                    result.opened,
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    after.saturating_sub(before) as f64 / result.opened.max(1) as f64
                ),
                _ => println!("idle: {} connections held (pass --server-pid for RSS)", result.opened),
            }
            Ok(())
        }
        Command::Run {
            addr,
            label,
            baseline,
            baseline_label,
            http_addr,
            baseline_http,
            baseline_http_label,
            baseline_http_pid,
            user,
            pass,
            scenarios,
            connections,
            depth,
            duration,
            warmup,
            runs,
            server_pid,
            framing,
            bind,
            tls_ca,
            tls_domain,
            baseline_pid,
            json,
            plot,
        } => {
            let timing = Timing { warmup, duration };
            let tls = tls_ca.map(|ca_file| load::Tls::new(&ca_file, &tls_domain)).transpose()?;
            let target_at = |address, server_pid, framing, tls| Target {
                address,
                spread: Vec::new(),
                user: user.clone(),
                password: pass.clone(),
                server_pid,
                bind,
                framing,
                tls,
                own_users: None,
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // Only the doors the scenarios use are set up.
            let mut binary = None;
            if scenarios.iter().any(|scenario| !scenario.is_http()) {
                let target =
                    Target { spread: addr[1..].to_vec(), ..target_at(addr[0], server_pid, framing, tls) };
                let token = runtime.block_on(load::prepare(&target))?;
                let mut door = Door { side: Side { target, token, label: label.clone() }, baseline: None };
                if let Some(address) = baseline {
                    // The null server speaks the legacy framing only, in plaintext.
                    let target = target_at(address, baseline_pid, load::Framing::Legacy, None);
                    let token = runtime.block_on(load::prepare(&target))?;
                    door.baseline = Some(Side { target, token, label: baseline_label });
                }
                binary = Some(door);
            }
            let (mut http, mut issued) = (None, None);
            if scenarios.iter().any(|scenario| scenario.is_http()) {
                let target = target_at(http_addr, server_pid, load::Framing::Legacy, None);
                let setup = forward::Setup {
                    address: target.address,
                    user: &target.user,
                    password: &target.password,
                };
                let token = runtime.block_on(forward::issue_token(&setup))?;
                // The null HTTP server answers 200 to anything: it gets the same requests.
                let baseline = baseline_http.map(|address| Side {
                    target: target_at(address, baseline_http_pid, load::Framing::Legacy, None),
                    token: token.token.clone(),
                    label: baseline_http_label,
                });
                http = Some(Door { side: Side { target, token: token.token.clone(), label }, baseline });
                issued = Some(token);
            }
            let mut summaries = Vec::new();
            eprintln!("{}", report::table_header());
            let mut measure = || -> std::io::Result<()> {
                for &scenario in &scenarios {
                    let door = if scenario.is_http() { &http } else { &binary };
                    let door = door.as_ref().expect("every door a scenario uses is set up");
                    for &conns in &connections {
                        let cell = door.measure(scenario, conns, depth, timing, runs)?;
                        for summary in &cell {
                            println!(
                                "{}",
                                if json { report::json_line(summary) } else { report::table_row(summary) }
                            );
                        }
                        summaries.extend(cell);
                    }
                }
                Ok(())
            };
            let measured = measure();
            if let (Some(issued), Some(http)) = (issued, &http)
                && let Err(error) = runtime.block_on(issued.delete(&forward::Setup {
                    address: http.side.target.address,
                    user: &http.side.target.user,
                    password: &http.side.target.password,
                }))
            {
                eprintln!("latchkey-bench: {error}");
            }
            measured?;
            if let Some(path) = plot {
                let title =
                    format!("latchkey-bench, depth {depth}, {}s runs, median of {runs}", duration.as_secs());
                std::fs::write(&path, report::plot_svg(&summaries, &title))?;
                eprintln!("plot written to {}", path.display());
            }
            Ok(())
        }
    }
}

/// A server measured, with the token its requests carry and its label.
struct Side {
    target: Target,
    token: String,
    label: String,
}

/// One door of the server under test (the binary protocol or HTTP) and the
/// baseline its scenarios are compared to.
struct Door {
    side: Side,
    baseline: Option<Side>,
}

impl Door {
    /// `runs` runs of the baseline and the server under test, interleaved
    /// (B A B A …): the baseline's summary, if any, then the server's with
    /// its ratios to the baseline's medians.
    fn measure(
        &self,
        scenario: Scenario,
        conns: usize,
        depth: usize,
        timing: Timing,
        runs: usize,
    ) -> std::io::Result<Vec<report::Summary>> {
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for index in 0..runs.max(1) {
            if let Some(base) = &self.baseline {
                let run = load::run(&base.target, scenario, conns, depth, timing, &base.token)?;
                eprintln!("{}", report::run_line(&base.label, scenario.name(), conns, depth, index, &run));
                theirs.push(run);
            }
            let side = &self.side;
            let run = load::run(&side.target, scenario, conns, depth, timing, &side.token)?;
            eprintln!("{}", report::run_line(&side.label, scenario.name(), conns, depth, index, &run));
            mine.push(run);
        }
        let mut summary = report::summarize(&self.side.label, scenario.name(), conns, depth, &mine);
        let mut summaries = Vec::new();
        if let Some(base) = &self.baseline {
            let base = report::summarize(&base.label, scenario.name(), conns, depth, &theirs);
            report::compare(&mut summary, &base, &mine, &theirs);
            summaries.push(base);
        }
        summaries.push(summary);
        Ok(summaries)
    }
}

/// `etcd-churn`: for each connection count, `runs` rounds of three runs
/// (Latchkey's churn, the etcd loops with the shared keys, the etcd loops
/// with none shared), then the three summaries, Latchkey's with its ratio
/// to the shared loops (the same work as Latchkey's transactions).
#[cfg(feature = "etcd")]
fn etcd_churn(args: EtcdChurnArgs) -> std::io::Result<()> {
    use etcd_direct::Keying;

    let timing = Timing { warmup: args.warmup, duration: args.duration };
    let target = Target {
        address: args.addr[0],
        spread: args.addr[1..].to_vec(),
        user: args.user.clone(),
        password: args.pass.clone(),
        server_pid: args.node_pids.first().copied(),
        bind: None,
        framing: load::Framing::Legacy,
        tls: None,
        own_users: args
            .own_users
            .clone()
            .map(|prefix| load::OwnUsers { prefix, password: args.own_users_pass.clone() }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let token = runtime.block_on(load::prepare(&target))?;
    runtime.block_on(etcd_direct::clear(&args.etcd, &args.prefix))?;
    // Whole-run CPU of a group of processes, in cores; none if any is unknown.
    let cpu_of = |pids: &[u32]| -> Option<Duration> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&pid| sys::process_times(pid).map(sys::CpuTimes::total)).sum()
    };
    let cores_text = |before: Option<Duration>, after: Option<Duration>, elapsed: Duration| {
        after.zip(before).map_or("-".to_owned(), |(after, before)| {
            format!("{:.2}", after.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64())
        })
    };
    let keyings = [Keying::Serial, Keying::Shared, Keying::Independent];
    eprintln!("{}  (ratios: to etcd-indep)", report::table_header());
    for &conns in &args.connections {
        let mut latchkey = Vec::new();
        let mut direct: [Vec<load::RunResult>; 3] = Default::default();
        let mut conflicts: [Vec<u64>; 3] = Default::default();
        for index in 0..args.runs.max(1) {
            let (etcd_before, nodes_before, started) =
                (cpu_of(&args.etcd_pids), cpu_of(&args.node_pids), std::time::Instant::now());
            let run = load::run(&target, Scenario::Churn, conns, 1, timing, &token)?;
            let elapsed = started.elapsed();
            eprintln!(
                "{}  etcd cpu {}  nodes cpu {} (whole run)",
                report::run_line(&args.label, "churn", conns, 1, index, &run),
                cores_text(etcd_before, cpu_of(&args.etcd_pids), elapsed),
                cores_text(nodes_before, cpu_of(&args.node_pids), elapsed),
            );
            latchkey.push(run);
            for (side, keying) in keyings.into_iter().enumerate() {
                let (etcd_before, started) = (cpu_of(&args.etcd_pids), std::time::Instant::now());
                let measured = etcd_direct::run(&args.etcd, &args.prefix, keying, conns, timing)?;
                let elapsed = started.elapsed();
                eprintln!(
                    "{}  etcd cpu {} (whole run)  conflicts {}",
                    report::run_line(keying.label(), "churn", conns, 1, index, &measured.run),
                    cores_text(etcd_before, cpu_of(&args.etcd_pids), elapsed),
                    measured.conflicts
                );
                direct[side].push(measured.run);
                conflicts[side].push(measured.conflicts);
            }
        }
        let mut summary = report::summarize(&args.label, "churn", conns, 1, &latchkey);
        let mut bases: Vec<report::Summary> = keyings
            .iter()
            .zip(&direct)
            .map(|(keying, runs)| report::summarize(keying.label(), "churn", conns, 1, runs))
            .collect();
        // The table's ratios are to etcd-indep: etcd's own rate for
        // transactions of this shape at this concurrency.
        let independent = &bases[2];
        summary.ratio_ops = Some(summary.ops_per_sec / independent.ops_per_sec.max(1e-9));
        summary.ratio_p99 = Some(summary.p99_us as f64 / independent.p99_us.max(1) as f64);
        let ratios: Vec<String> = bases
            .iter()
            .map(|base| format!("/ {} {:.2}", base.target, summary.ops_per_sec / base.ops_per_sec.max(1e-9)))
            .collect();
        let conflicts: Vec<String> = keyings
            .iter()
            .zip(&mut conflicts)
            .map(|(keying, runs)| {
                runs.sort_unstable();
                format!("{} {}", keying.label(), runs[runs.len() / 2])
            })
            .collect();
        bases.insert(0, summary);
        for summary in &bases {
            println!("{}", if args.json { report::json_line(summary) } else { report::table_row(summary) });
        }
        println!(
            "{conns} connections: {} {}; conflicts per run (median): {}",
            args.label,
            ratios.join(", "),
            conflicts.join(", ")
        );
    }
    Ok(())
}
