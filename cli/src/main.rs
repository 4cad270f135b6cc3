//! `latchkey`: the command-line client for a Latchkey server's personal
//! access tokens (create, list, show, update, revoke, rotate, delete), `me`,
//! `ping`, and `authorize` for brokers.
//!
//! The layout: args.rs is the command line, credentials.rs the login's
//! sources, commands.rs the SDK calls, render.rs (with table.rs and time.rs)
//! the output, failure.rs the exit codes, docs.rs the completions and man
//! pages. Everything goes through `latchkey-sdk`; this crate never touches
//! the wire itself.

// The password prompt's terminal calls are rpassword's; nothing here needs unsafe.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod credentials;
mod docs;
mod failure;
mod render;
mod table;
mod time;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Bad arguments exit here with clap's code 2; --help and --version with 0.
    let cli = args::Cli::parse();
    match &cli.command {
        args::Command::Completions(args) => return docs::completions(args.shell),
        args::Command::Man(args) => return docs::man_pages(&args.out_dir),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("latchkey: cannot start: {error}");
            return ExitCode::from(failure::EXIT_CONNECTION);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(report) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`latchkey token list | head -1`) is not an error
            // worth a message; any other write failure is reported.
            if let Err(error) = stdout.write_all(report.stdout.as_bytes()).and_then(|()| stdout.flush())
                && error.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("latchkey: cannot write the output: {error}");
                return ExitCode::from(failure::EXIT_CONNECTION);
            }
            if report.denied { ExitCode::from(failure::EXIT_DENIED) } else { ExitCode::SUCCESS }
        }
        Err(failure) => {
            eprintln!("latchkey: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
