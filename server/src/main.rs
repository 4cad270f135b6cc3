//! The `latchkey-server` binary: flags, config loading, logging.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use latchkey_server::auth::root::RootGiven;
use latchkey_server::auth::users::{PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, hash_password};
use latchkey_server::config::{Config, LogFormat};
use latchkey_server::offline;
use latchkey_server::offline::log_tools::{self, LogFile};
use latchkey_server::server::{self, Options};
use latchkey_server::store::CompactionPolicy;

/// Config file read when `--config` is not given (if it exists).
const DEFAULT_CONFIG_PATH: &str = "configs/server.toml";

#[derive(Parser)]
#[command(
    name = "latchkey-server",
    version,
    about = "Personal access token server speaking Iggy's binary protocol"
)]
struct Cli {
    /// Config file (default: configs/server.toml if present, else built-in defaults).
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// On a data directory with no root user yet, make root iggy/iggy.
    #[arg(long)]
    with_default_root_credentials: bool,
    /// Cut the token log at this byte offset before starting: the way past
    /// a corruption the server refused to start on (it names the offset).
    /// Everything recorded from that offset on is lost.
    #[arg(long, value_name = "OFFSET")]
    truncate_log_at: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Read a password from standard input and print its Argon2 PHC hash,
    /// for `password_hash` in `[[users]]`.
    HashPassword,
    /// Write every token of the configured store ([storage] backend) to a
    /// new file, while no server runs on it. Tokens keep working elsewhere
    /// only with the same key (CLUSTER.md, "Moving in and out").
    Export {
        /// The file to create (never overwritten; mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write every token of an export into the configured store, which must
    /// hold none yet, while no server runs on it.
    Import {
        /// A file written by `export`.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Take a consistent backup of the running server on this host into a
    /// new directory: every change acknowledged before it began is in it.
    /// Root's password comes from LATCHKEY_BACKUP_PASSWORD, else standard
    /// input (README, "Backup and restore").
    Backup {
        /// The directory to create (must hold no data yet).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Root's username.
        #[arg(long, value_name = "NAME")]
        username: String,
        /// The server's HTTP address (default: [http] address).
        #[arg(long, value_name = "HOST:PORT")]
        http: Option<String>,
    },
    /// Make the configured data directory ([system] path, which must be new)
    /// from a backup.
    Restore {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Read the token log without changing it: check it, print its records,
    /// or count them. Refused while a server runs on the data directory.
    #[command(subcommand)]
    Log(LogCommand),
    /// Write man pages for latchkey-server and each of its subcommands into
    /// a directory (for packaging; README, "Packaging and installing").
    #[command(hide = true)]
    Man {
        /// The directory to write them to (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// Shown after the help of every `log` subcommand.
const LOG_AFTER_HELP: &str = "\
The data directory is [system] path (LATCHKEY_SYSTEM_PATH), as for the server;
the file backend only. Its lock is taken shared, only while the file is read:
a running server's directory is refused (exit 1), and a server cannot start
during that read. No token hash is ever printed.

Exit codes:
  0  the log replays as it is
  1  not read: the directory is in use by a server, or no readable log
  2  usage or configuration error
  3  a torn tail (a crash mid-append): a start cuts it and goes on
  4  damage a start refuses (see --truncate-log-at)";

#[derive(Subcommand)]
enum LogCommand {
    /// Replay the log as a start would: records, batches, live and deleted
    /// tokens, the file size, and the first problem with its byte offset.
    #[command(after_help = LOG_AFTER_HELP)]
    Verify(LogArgs),
    /// One line per record: offset, sequence number, commit time, type,
    /// token id, user id, name and the record's times (never a hash).
    #[command(after_help = LOG_AFTER_HELP)]
    Dump(LogArgs),
    /// Records by type, tokens by status and per user, the dead share, and
    /// what a compaction would reclaim.
    #[command(after_help = LOG_AFTER_HELP)]
    Stats {
        #[command(flatten)]
        log: LogArgs,
        /// How many users to list, those with the most tokens first.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
    },
}

#[derive(Args)]
struct LogArgs {
    /// One JSON object per line (for `dump`, one per record).
    #[arg(long)]
    json: bool,
    /// Read this token file instead (a copy of a log, or an export); no lock
    /// is taken.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

fn main() -> ExitCode {
    // FAILPOINTS=name=action;… (fault tests only; see tests/tests/faults.rs).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password_command();
    }
    if let Some(Command::Man { out_dir }) = &cli.command {
        return man_pages(out_dir);
    }
    // The config first: it says how to log. Its errors go to stderr.
    let (config, config_path) = match load_config(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("latchkey-server: {error}");
            return ExitCode::from(2);
        }
    };
    // The log tools print on standard output: no log lines among theirs.
    if let Some(Command::Log(command)) = &cli.command {
        return log_command(&config, command);
    }
    init_logging(config.log.format);
    match &config_path {
        Some(path) => tracing::info!(path = %path.display(), "config loaded"),
        None => tracing::info!("no config file; using built-in defaults"),
    }
    if let Some(command @ (Command::Export { .. } | Command::Import { .. })) = &cli.command {
        return transfer(config, command);
    }
    if let Some(command @ (Command::Backup { .. } | Command::Restore { .. })) = &cli.command {
        return backup_or_restore(&config, command);
    }
    let options = Options {
        config,
        config_path,
        root: RootGiven {
            username: std::env::var("LATCHKEY_ROOT_USERNAME").ok(),
            password: std::env::var("LATCHKEY_ROOT_PASSWORD").ok(),
            with_default: cli.with_default_root_credentials,
        },
        truncate_log_at: cli.truncate_log_at,
    };
    match server::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("latchkey-server: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `export` and `import`: the config says which store; the exit code 0 on
/// success, 1 on any error (said on stderr).
fn transfer(config: Config, command: &Command) -> ExitCode {
    let result = match command {
        Command::Export { out } => offline::export(&config, out)
            .map(|tokens| format!("exported {tokens} tokens to {}", out.display())),
        Command::Import { input } => offline::import(&config, input)
            .map(|tokens| format!("imported {tokens} tokens from {}", input.display())),
        _ => unreachable!("handled before"),
    };
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("latchkey-server: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `backup` and `restore`: exit code 0 on success, 1 on any error.
fn backup_or_restore(config: &Config, command: &Command) -> ExitCode {
    let result = match command {
        Command::Backup { to, username, http } => {
            let password = match std::env::var("LATCHKEY_BACKUP_PASSWORD") {
                Ok(password) => zeroize::Zeroizing::new(password),
                Err(_) => {
                    let mut line = zeroize::Zeroizing::new(String::new());
                    if std::io::stdin().is_terminal() {
                        eprintln!("Root's password (input is echoed; pipe it in to avoid that):");
                    }
                    if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
                        eprintln!("latchkey-server: cannot read the password: {error}");
                        return ExitCode::FAILURE;
                    }
                    zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
                }
            };
            let address = http.as_deref().unwrap_or(&config.http.address);
            let source = offline::backup::BackupSource { address, username, password: &password };
            offline::backup::backup(config, &source, to).map(|copied| {
                format!(
                    "backed up {} tokens ({} bytes of log) to {}",
                    copied.tokens,
                    copied.log_bytes,
                    to.display()
                )
            })
        }
        Command::Restore { from } => offline::backup::restore(config, from)
            .map(|copied| format!("restored {} tokens into {}", copied.tokens, config.system.path.display())),
        _ => unreachable!("handled before"),
    };
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("latchkey-server: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `log verify|dump|stats`; the exit code says what a start would find
/// (`LOG_AFTER_HELP`).
fn log_command(config: &Config, command: &LogCommand) -> ExitCode {
    let args = match command {
        LogCommand::Verify(args) | LogCommand::Dump(args) | LogCommand::Stats { log: args, .. } => args,
    };
    let log = match log_tools::read_log(config, args.file.as_deref()) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("latchkey-server: {error}");
            return ExitCode::from(error.exit_code());
        }
    };
    let mut stdout = std::io::stdout().lock();
    let written = match command {
        LogCommand::Verify(_) => log_tools::verify(&log, args.json, &mut stdout),
        LogCommand::Dump(_) => dump(&log, args.json, &mut stdout),
        LogCommand::Stats { top, .. } => {
            let system = &config.system;
            let policy = CompactionPolicy {
                min_records: system.compaction_min_records,
                dead_ratio: system.compaction_dead_ratio,
            };
            log_tools::stats(&log, policy, *top, args.json, &mut stdout)
        }
    };
    match written.and_then(|code| stdout.flush().map(|()| code)) {
        Ok(code) => ExitCode::from(code),
        // `log dump | head`: the reader has seen enough.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latchkey-server: cannot write the output: {error}");
            ExitCode::from(log_tools::EXIT_NOT_READ)
        }
    }
}

/// A dump's problem goes to standard error, so its standard output stays
/// one record per line.
fn dump(log: &LogFile, json: bool, out: &mut dyn std::io::Write) -> std::io::Result<u8> {
    let (code, problem) = log_tools::dump(log, json, out)?;
    if let Some(problem) = problem {
        eprintln!("latchkey-server: {}: {problem}", log.path.display());
    }
    Ok(code)
}

/// `man`: latchkey-server.1, and latchkey-server-SUBCOMMAND.1 for each
/// subcommand shown in the help, from the same definitions as `--help`.
fn man_pages(out_dir: &Path) -> ExitCode {
    let written =
        std::fs::create_dir_all(out_dir).and_then(|()| clap_mangen::generate_to(Cli::command(), out_dir));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latchkey-server: cannot write man pages to {}: {error}", out_dir.display());
            ExitCode::FAILURE
        }
    }
}

/// The config and the file it came from (re-read on SIGHUP).
fn load_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), String> {
    let default = Path::new(DEFAULT_CONFIG_PATH);
    let path = match path {
        Some(path) => Some(path),
        None if default.exists() => Some(default),
        None => None,
    };
    let mut config = Config::from_file(path).map_err(|e| e.to_string())?;
    config.apply_env(|key| std::env::var(key).ok()).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok((config, path.map(Path::to_owned)))
}

/// Log lines on standard output, filtered by `LATCHKEY_LOG` (default
/// `info`), as text or as one JSON object a line (`[log] format`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        // Fields flattened beside the message, so an audit event's fields
        // are top-level keys (`event`, `user_id`, …) next to `target`.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
}

fn hash_password_command() -> ExitCode {
    if std::io::stdin().is_terminal() {
        eprintln!("Password (input is echoed; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("latchkey-server: cannot read password: {error}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        eprintln!("latchkey-server: password must be {PASSWORD_BYTES_MIN}-{PASSWORD_BYTES_MAX} bytes");
        return ExitCode::from(2);
    }
    println!("{}", hash_password(password));
    ExitCode::SUCCESS
}
