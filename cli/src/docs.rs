//! What the CLI says about itself without a server: shell completions
//! (`latchkey completions SHELL`) and man pages (`latchkey man --out-dir
//! DIR`, hidden: a packaging step), both made from the clap definitions in
//! args.rs, so they never disagree with `--help`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;
use crate::failure::{EXIT_CONNECTION, EXIT_USAGE};

/// The name completions are registered for: the installed binary's.
const BINARY_NAME: &str = "latchkey";

pub fn completions(shell: Shell) -> ExitCode {
    // Into memory first: clap_complete panics on a failed write, and a
    // closed pipe (`latchkey completions bash | head`) is no failure.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BINARY_NAME, &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("latchkey: cannot write the output: {error}");
            ExitCode::from(EXIT_CONNECTION)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// latchkey.1, and latchkey-COMMAND.1 for each command shown in the help.
pub fn man_pages(out_dir: &Path) -> ExitCode {
    let written =
        std::fs::create_dir_all(out_dir).and_then(|()| clap_mangen::generate_to(Cli::command(), out_dir));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latchkey: cannot write man pages to {}: {error}", out_dir.display());
            ExitCode::from(EXIT_USAGE)
        }
    }
}
