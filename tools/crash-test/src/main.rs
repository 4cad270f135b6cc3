//! `crash-test`: proves that Latchkey loses nothing it acknowledged.
//!
//! Each cycle drives creates and deletes from several root connections,
//! SIGKILLs the real server at a random moment, restarts it on the same data
//! directory and checks the recovered state against everything that was
//! acknowledged, in this cycle and every earlier one:
//!
//! - the server starts again without help;
//! - every token whose create was acknowledged, and not deleted since, is
//!   listed and logs in as root;
//! - every token whose delete was acknowledged is refused (20) and its name
//!   not listed (unless the name was created again, with a new token);
//! - a request whose reply never arrived may have happened or not, but the
//!   list holds nothing the harness never asked for, and no name twice.
//!
//! The seed fixes the kill delays and every worker's choices; the thread
//! interleaving, and so exactly which requests are in flight at the kill,
//! is up to the machine.

mod load;
mod model;
mod server;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::load::WorkerPlan;
use crate::model::{Expected, Violation};
use crate::server::{LogEvents, ServerOutput, ServerProcess, ServerSpec};

/// Most connections a cycle may use (a name carries the index in 3 digits).
const CONNECTIONS_MAX: usize = 999;
/// Absent names each worker may create again in a cycle.
const RECREATE_PER_WORKER: usize = 32;

#[derive(Parser, Debug)]
#[command(
    name = "crash-test",
    version,
    about = "SIGKILL latchkey-server under load and prove nothing acknowledged is lost"
)]
struct Cli {
    /// Crash-restart-verify cycles to run.
    #[arg(long, default_value_t = 30)]
    cycles: u32,
    /// Concurrent connections writing in each cycle.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seed for the kill delays and the workers' choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// The latchkey-server binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Data directory, empty or new (default: a temporary one). Kept.
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Earliest kill, in ms after every connection is logged in.
    #[arg(long, default_value_t = 20)]
    kill_min_ms: u64,
    /// Latest kill, in ms after every connection is logged in.
    #[arg(long, default_value_t = 300)]
    kill_max_ms: u64,
    /// Live tokens the load steers toward (more deletes above, more creates below).
    #[arg(long, default_value_t = 2000)]
    live_target: usize,
    /// Older tokens whose login is checked each cycle, besides all touched in it.
    #[arg(long, default_value_t = 200)]
    login_sample: usize,
    /// The server's compaction_min_records: small, so compaction runs across crashes.
    #[arg(long, default_value_t = 500)]
    compaction_min_records: u64,
    /// Run the server in cluster mode on this etcd cluster (HOST:PORT,...),
    /// under a prefix of its own; the server must be built with `--features
    /// etcd`. Each kill is then of a cluster node, and its restart reloads
    /// the registry from etcd.
    #[arg(long, value_name = "ENDPOINTS", requires = "etcd_key_file")]
    etcd_endpoints: Option<String>,
    /// The token-hash key file for cluster mode (32 bytes, mode 0600).
    #[arg(long, value_name = "PATH")]
    etcd_key_file: Option<PathBuf>,
    /// A write answered 20002 (the store could not say whether it
    /// happened) is in doubt, settled by the list after the next restart,
    /// instead of a broken promise: for runs that also kill etcd members
    /// (tools/crash-test/etcd.sh with ETCD_CHAOS).
    #[arg(long)]
    unavailable_is_in_doubt: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Set before any worker starts; the workers consult it.
    load::UNAVAILABLE_IS_IN_DOUBT.store(cli.unavailable_is_in_doubt, std::sync::atomic::Ordering::Relaxed);
    if let Err(message) = check_cli(&cli) {
        eprintln!("crash-test: {message}");
        return ExitCode::from(2);
    }
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!("crash-test: seed {seed} (rerun with --seed {seed})");
    match Harness::new(&cli, seed) {
        Ok(harness) => harness.run(),
        Err(message) => {
            eprintln!("crash-test: {message}");
            ExitCode::from(2)
        }
    }
}

fn check_cli(cli: &Cli) -> Result<(), String> {
    if !(1..=CONNECTIONS_MAX).contains(&cli.connections) {
        return Err(format!("--connections must be 1-{CONNECTIONS_MAX}"));
    }
    if cli.kill_min_ms > cli.kill_max_ms {
        return Err("--kill-min-ms must not exceed --kill-max-ms".into());
    }
    Ok(())
}

/// The server binary next to this executable: `target/<profile>/latchkey-server`.
fn default_server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().unwrap_or(Path::new(".")).join("latchkey-server")
}

/// Totals for the summary.
#[derive(Debug, Default)]
struct Totals {
    cycles: u32,
    max_log_bytes: u64,
    logins_checked: u64,
}

struct Harness {
    cycles: u32,
    connections: usize,
    seed: u64,
    kill_ms: (u64, u64),
    live_target: usize,
    login_sample: usize,
    /// Holds the config and the server output, and the data unless
    /// `--data-dir` was given; kept when a check fails.
    run_dir: tempfile::TempDir,
    spec: ServerSpec,
    output: ServerOutput,
    runtime: tokio::runtime::Runtime,
    rng: StdRng,
    expected: Expected,
    totals: Totals,
    starts: u32,
}

impl Harness {
    fn new(cli: &Cli, seed: u64) -> Result<Harness, String> {
        let binary = cli.server_bin.clone().unwrap_or_else(default_server_binary);
        if !binary.is_file() {
            return Err(format!(
                "no server binary at {} (build it with `cargo build --release -p latchkey-server`, or pass --server-bin)",
                binary.display()
            ));
        }
        let run_dir = tempfile::Builder::new()
            .prefix("latchkey-crash-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
        let data_dir = match &cli.data_dir {
            Some(dir) => {
                let occupied =
                    std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
                if occupied {
                    return Err(format!("--data-dir {} is not empty", dir.display()));
                }
                dir.clone()
            }
            None => run_dir.path().join("data"),
        };
        let config = run_dir.path().join("server.toml");
        std::fs::write(&config, "").map_err(|error| format!("cannot write {}: {error}", config.display()))?;
        let output = ServerOutput::create(&run_dir.path().join("server.log"))
            .map_err(|error| format!("cannot create the server log: {error}"))?;
        let env = [
            // Audit lines (one per login and change) would only slow the server down here.
            ("LATCHKEY_LOG", "info,audit=off".to_owned()),
            ("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "1000000".to_owned()),
            ("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", cli.compaction_min_records.to_string()),
            // The checks log in with every deleted token on purpose: thousands
            // of expected failures from one address, which the throttle
            // exists to stop.
            ("LATCHKEY_LOGIN_THROTTLE_ENABLED", "false".to_owned()),
        ];
        let mut env: Vec<(String, String)> =
            env.into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
        if let (Some(endpoints), Some(key_file)) = (&cli.etcd_endpoints, &cli.etcd_key_file) {
            env.extend([
                ("LATCHKEY_STORAGE_BACKEND".to_owned(), "etcd".to_owned()),
                ("LATCHKEY_STORAGE_ETCD_ENDPOINTS".to_owned(), endpoints.clone()),
                ("LATCHKEY_STORAGE_ETCD_KEY_FILE".to_owned(), key_file.display().to_string()),
                ("LATCHKEY_STORAGE_ETCD_PREFIX".to_owned(), format!("/latchkey-crash/{seed}/")),
            ]);
        }
        let spec = ServerSpec { binary, data_dir, config, env };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the async runtime: {error}"))?;
        Ok(Harness {
            cycles: cli.cycles,
            connections: cli.connections,
            seed,
            kill_ms: (cli.kill_min_ms, cli.kill_max_ms),
            live_target: cli.live_target,
            login_sample: cli.login_sample,
            run_dir,
            spec,
            output,
            runtime,
            rng: StdRng::seed_from_u64(seed),
            expected: Expected::default(),
            totals: Totals::default(),
            starts: 0,
        })
    }

    fn run(mut self) -> ExitCode {
        let started = Instant::now();
        println!(
            "crash-test: {} cycles, {} connections, server {}, data {}",
            self.cycles,
            self.connections,
            self.spec.binary.display(),
            self.spec.data_dir.display()
        );
        let result = self.start_server(0).and_then(|server| {
            let mut server = server;
            for cycle in 1..=self.cycles {
                server = self.cycle(cycle, server)?;
                self.totals.cycles = cycle;
            }
            Ok(server)
        });
        match result {
            Ok(server) => {
                let status = server.terminate();
                self.summary(started.elapsed());
                if let Some(status) = status.filter(|status| !status.success()) {
                    println!("note: the server exited with {status} on SIGTERM at the end of the run");
                }
                ExitCode::SUCCESS
            }
            Err(violation) => {
                self.summary(started.elapsed());
                self.report(&violation);
                ExitCode::FAILURE
            }
        }
    }

    fn start_server(&mut self, cycle: u32) -> Result<ServerProcess, Violation> {
        self.starts += 1;
        let label = format!("start {} (after cycle {cycle})", self.starts);
        ServerProcess::start(&self.spec, &self.output, &label).map_err(|why| {
            let expected = if cycle == 0 { "a start" } else { "a restart without manual help" };
            let found = format!("the server {why}; its last output:\n{}", self.output.tail());
            Violation::new(cycle, "server start", expected, found)
        })
    }

    /// Load, kill, restart, verify. Returns the restarted server.
    fn cycle(&mut self, cycle: u32, mut server: ServerProcess) -> Result<ServerProcess, Violation> {
        let cycle_started = Instant::now();
        let holdings = self.expected.begin_cycle(self.connections, RECREATE_PER_WORKER, &mut self.rng);
        let present_target = (self.live_target / self.connections).max(1);
        let plans: Vec<WorkerPlan> = holdings
            .into_iter()
            .enumerate()
            .map(|(index, holdings)| WorkerPlan { index, holdings, present_target, seed: self.rng.random() })
            .collect();
        let kill_after = Duration::from_millis(self.rng.random_range(self.kill_ms.0..=self.kill_ms.1));
        let mut exited_early = None;
        let load = self.runtime.block_on(load::run(server.address, cycle, plans, kill_after, || {
            exited_early = server.exited();
            server.kill();
        }));
        if let Some(status) = exited_early {
            return Err(Violation::new(
                cycle,
                "server",
                "running until the kill",
                format!("it exited by itself with {status}"),
            ));
        }
        let (creates, deletes) =
            (self.expected.counts.creates_acknowledged, self.expected.counts.deletes_acknowledged);
        let mut violation = None;
        for report in load.workers {
            for event in report.events {
                self.expected.apply(cycle, event);
            }
            violation = violation.or(report.violation);
        }
        if let Some(violation) = violation {
            return Err(violation);
        }
        let creates = self.expected.counts.creates_acknowledged - creates;
        let deletes = self.expected.counts.deletes_acknowledged - deletes;
        let log_bytes = std::fs::metadata(self.spec.data_dir.join("tokens.log")).map_or(0, |meta| meta.len());
        self.totals.max_log_bytes = self.totals.max_log_bytes.max(log_bytes);

        let restart_started = Instant::now();
        let server = self.start_server(cycle)?;
        let restart = restart_started.elapsed();
        let verified = self.runtime.block_on(verify::verify(
            server.address,
            cycle,
            &mut self.expected,
            self.login_sample,
            &mut self.rng,
        ))?;
        self.totals.logins_checked += verified.logins as u64;
        println!(
            "cycle {cycle:>4}/{}: kill at {:>3} ms; acked {creates:>4} creates {deletes:>4} deletes; \
             in doubt {} (kept {}); live {:>5}; log {:>7} B; restart {:.2} s; {} logins ok; {:.2} s",
            self.cycles,
            load.load_time.as_millis(),
            verified.settled.present + verified.settled.absent,
            verified.settled.present,
            verified.listed,
            log_bytes,
            restart.as_secs_f64(),
            verified.logins,
            cycle_started.elapsed().as_secs_f64(),
        );
        Ok(server)
    }

    fn summary(&self, elapsed: Duration) {
        let counts = &self.expected.counts;
        let events = &self.output.events;
        println!("crash-test summary (seed {}):", self.seed);
        println!("  cycles survived        {} of {}", self.totals.cycles, self.cycles);
        println!("  creates acknowledged   {}", counts.creates_acknowledged);
        println!("  deletes acknowledged   {}", counts.deletes_acknowledged);
        println!(
            "  in-doubt requests      {} (present after the restart {}, absent {})",
            counts.in_doubt, counts.settled_present, counts.settled_absent
        );
        println!("  max log size           {} bytes (tokens.log after a kill)", self.totals.max_log_bytes);
        println!(
            "  compactions            {} completed, {} cut short by a kill; torn tails cut {}",
            LogEvents::get(&events.compactions),
            LogEvents::get(&events.abandoned_compactions),
            LogEvents::get(&events.torn_tails)
        );
        println!(
            "  token logins checked   {}; live tokens at the end {}",
            self.totals.logins_checked,
            self.expected.present_len()
        );
        println!("  total run time         {:.1} s", elapsed.as_secs_f64());
    }

    /// Prints the violation and keeps the run directory for inspection.
    fn report(self, violation: &Violation) {
        eprintln!("crash-test: VIOLATION (seed {}) in {violation}", self.seed);
        // The data directory is inside the run directory unless --data-dir named it.
        let _ = self.run_dir.keep();
        eprintln!("crash-test: data directory kept for inspection: {}", self.spec.data_dir.display());
        eprintln!("crash-test: server output of every start: {}", self.output.path().display());
    }
}
