//! The command line: every command, flag and help text (clap derive), and
//! the parsers for the values that need more than `FromStr`.
//!
//! Values that travel as bounded strings on the wire are checked here, so a
//! too-long name is a usage error (exit 2) rather than an SDK error.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use latchkey_sdk::{Expiry, RotateExpiry, StatusFilter, TokenSelector};

/// Shown after the options of `latchkey --help`.
const MAIN_AFTER_HELP: &str = "\
Credentials:
  The command line beats the environment: if --token or --username is given,
  LATCHKEY_TOKEN and LATCHKEY_USERNAME are ignored. From the same source a
  token beats a username (the username is then unused). The password comes
  from --password, else LATCHKEY_PASSWORD, else a prompt on the terminal
  (with echo off); with no terminal on standard input the command fails
  with exit code 2. `ping` never logs in.
  --password and --token are visible to other local users in the process
  list: prefer the environment or the prompt.

Environment:
  LATCHKEY_ADDR      server address (default 127.0.0.1:8090)
  LATCHKEY_USERNAME  username to log in with
  LATCHKEY_PASSWORD  password for LATCHKEY_USERNAME or --username
  LATCHKEY_TOKEN     personal access token to log in with

Exit codes:
  0  success (for `authorize`: allowed)
  1  the server refused the request (its code, name and message are printed)
  2  usage or configuration error
  3  `authorize`: denied
  4  connection failed: unreachable, closed, timed out or garbled
  5  authentication failed: the login was refused (bad password or token,
     expired, revoked or rotated token, address not allowed, inactive user)

Secrets: only `token create` and `token rotate` print a token, once.";

/// Shown after the options of every token command that takes a token.
const SELECTOR_AFTER_HELP: &str = "\
A token is named by ID|NAME: an argument made only of digits is taken as an
id, anything else as a name. Use --id or --name to say which (for a token
whose name is a number: --name 2024).";

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Manage personal access tokens on a Latchkey server, and check them for a broker.",
    after_help = MAIN_AFTER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, anywhere on the line.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output")]
pub struct GlobalArgs {
    /// Server address, HOST:PORT [env: LATCHKEY_ADDR] [default: 127.0.0.1:8090]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Log in as this user [env: LATCHKEY_USERNAME]
    #[arg(long, short = 'u', global = true, value_parser = short_text)]
    pub username: Option<String>,
    /// Password for the user [env: LATCHKEY_PASSWORD]; else prompted for
    #[arg(long, global = true, value_parser = short_text, hide_default_value = true)]
    pub password: Option<String>,
    /// Log in with this personal access token instead [env: LATCHKEY_TOKEN]
    #[arg(long, global = true, value_parser = wire_name)]
    pub token: Option<String>,
    /// Print machine-readable JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,
    /// Time allowed to connect and for each request, e.g. 10s, 1m
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = timeout)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show, update, revoke, rotate and delete your tokens, and
    /// edit their scopes and networks
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show who this login is: user id, username, client id, address
    Me,
    /// Check that the server answers (does not log in)
    Ping,
    /// Ask whether a token may use a scope from an address (for brokers; needs
    /// the `authorize` permission). Exit code 0 when allowed, 3 when denied.
    Authorize(AuthorizeArgs),
    /// Print a shell completion script to standard output (does not connect)
    #[command(after_help = COMPLETIONS_AFTER_HELP)]
    Completions(CompletionsArgs),
    /// Write man pages for latchkey and each of its commands into a directory
    /// (for packaging; does not connect)
    #[command(hide = true)]
    Man(ManArgs),
}

/// Shown after the options of `latchkey completions`.
const COMPLETIONS_AFTER_HELP: &str = "\
Install (the Debian package puts them in these places):
  latchkey completions bash > /usr/share/bash-completion/completions/latchkey
  latchkey completions zsh  > /usr/share/zsh/vendor-completions/_latchkey
  latchkey completions fish > /usr/share/fish/vendor_completions.d/latchkey.fish
or for one shell session: source <(latchkey completions bash)";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write latchkey.1 and latchkey-COMMAND.1 to (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out_dir: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed this once
    Create(CreateArgs),
    /// List your tokens (every field but the secret) as a table
    List(ListArgs),
    /// Show every field of one token (never its secret)
    #[command(after_help = SELECTOR_AFTER_HELP)]
    Show(TokenArg),
    /// Rename a token or change its description
    #[command(after_help = SELECTOR_AFTER_HELP)]
    Update(UpdateArgs),
    /// Add, remove or clear a token's scopes (none left: full access)
    #[command(after_help = ACCESS_AFTER_HELP)]
    Scopes(ScopesArgs),
    /// Add, remove or clear a token's networks (none left: any address)
    #[command(after_help = ACCESS_AFTER_HELP)]
    Networks(NetworksArgs),
    /// Revoke a token: it stays listed for audit but can no longer log in
    #[command(after_help = SELECTOR_AFTER_HELP)]
    Revoke(TokenArg),
    /// Give a token a new secret (printed this once); the old one stops working at once.
    /// With --reactivate, a revoked token comes back too
    #[command(after_help = SELECTOR_AFTER_HELP)]
    Rotate(RotateArgs),
    /// Delete a token: it is gone, not even listed
    #[command(after_help = SELECTOR_AFTER_HELP)]
    Delete(TokenArg),
    /// Revoke every active token of yours
    RevokeAll(ConfirmArgs),
    /// Delete every token of yours
    DeleteAll(ConfirmArgs),
}

/// Shown after the options of `token scopes` and `token networks`.
const ACCESS_AFTER_HELP: &str = "\
The changes are one change on the server, applied in this order: --clear,
then each --remove, then each --add. Sessions that logged in with the token
end. A token with no scopes has full access; one with no networks may be
used from any address.

A token is named by ID|NAME: an argument made only of digits is taken as an
id, anything else as a name. Use --id or --name to say which.";

/// Which token: a positional ID|NAME, or --id / --name.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TokenArg {
    /// The token's id (all digits) or else its name
    #[arg(value_name = "ID|NAME")]
    id_or_name: Option<String>,
    /// The token with this id
    #[arg(long = "id", value_name = "ID")]
    by_id: Option<u64>,
    /// The token with this name, even if it is all digits
    #[arg(long = "name", value_name = "NAME", value_parser = wire_name)]
    by_name: Option<String>,
}

impl TokenArg {
    pub fn selector(&self) -> Result<TokenSelector, String> {
        match (&self.id_or_name, self.by_id, &self.by_name) {
            (_, Some(id), _) => Ok(TokenSelector::Id(id)),
            (_, _, Some(name)) => Ok(TokenSelector::Name(name.clone())),
            (Some(text), ..) => match text.parse::<u64>() {
                Ok(id) => Ok(TokenSelector::Id(id)),
                Err(_) => wire_name(text).map(TokenSelector::Name),
            },
            (None, None, None) => Err("name a token: ID|NAME, --id or --name".to_owned()),
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for the token, unique among yours
    #[arg(value_parser = wire_name)]
    pub name: String,
    /// What the token is for (at most 256 bytes)
    #[arg(long, short = 'd', default_value = "", hide_default_value = true)]
    pub description: String,
    /// Lifetime: a duration (30d, 12h, 1y), `never`, or `default` for the
    /// server's default
    #[arg(long, value_name = "DURATION|never|default", default_value = "default", value_parser = expiry)]
    pub expires: Expiry,
    /// Limit the token to this scope (repeatable); none means full access.
    /// Built-in: tokens:read, tokens:write, me:read, authorize; or a resource
    /// scope <type>:<id or *>:<action or *> such as stream:orders:write
    #[arg(long = "scope", value_name = "SCOPE", value_parser = wire_name)]
    pub scopes: Vec<String>,
    /// Allow logins only from this address or CIDR, IPv4 or IPv6
    /// (repeatable); none means any address
    #[arg(long = "network", value_name = "CIDR", value_parser = wire_name)]
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Active,
    Revoked,
    Expired,
    All,
}

impl StatusArg {
    pub fn filter(self) -> StatusFilter {
        match self {
            StatusArg::Active => StatusFilter::Active,
            StatusArg::Revoked => StatusFilter::Revoked,
            StatusArg::Expired => StatusFilter::Expired,
            StatusArg::All => StatusFilter::All,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tokens with this status
    #[arg(long, value_enum, default_value_t = StatusArg::All)]
    pub status: StatusArg,
    /// At most this many tokens (the lowest ids); all by default
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Only active tokens that expire within this long (e.g. 7d)
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub expiring_within: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub token: TokenArg,
    /// The token's new name
    #[arg(long, value_name = "NAME", value_parser = wire_name)]
    pub new_name: Option<String>,
    /// The token's new description (`""` clears it)
    #[arg(long, short = 'd')]
    pub description: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScopesArgs {
    #[command(flatten)]
    pub token: TokenArg,
    /// Grant this scope (repeatable): built-in (tokens:read, tokens:write,
    /// me:read, authorize) or <type>:<id or *>:<action or *>
    #[arg(long = "add", value_name = "SCOPE", value_parser = wire_name)]
    pub add: Vec<String>,
    /// Take this scope away (repeatable)
    #[arg(long = "remove", value_name = "SCOPE", value_parser = wire_name)]
    pub remove: Vec<String>,
    /// Take every scope away first; with no --add the token has full access
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct NetworksArgs {
    #[command(flatten)]
    pub token: TokenArg,
    /// Admit this address or CIDR, IPv4 or IPv6 (repeatable)
    #[arg(long = "add", value_name = "CIDR", value_parser = wire_name)]
    pub add: Vec<String>,
    /// Stop admitting this address or CIDR (repeatable)
    #[arg(long = "remove", value_name = "CIDR", value_parser = wire_name)]
    pub remove: Vec<String>,
    /// Take every network away first; with no --add any address may use the token
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub token: TokenArg,
    /// The new secret's lifetime from now: a duration (30d, 12h), `never`,
    /// or `keep` for the current expiry
    #[arg(long, value_name = "DURATION|never|keep", default_value = "keep", value_parser = rotate_expiry)]
    pub expires: RotateExpiry,
    /// Bring back a revoked token: its revocation is cleared and it works
    /// again with the new secret. An expired token needs a new lifetime in
    /// --expires (with or without this flag)
    #[arg(long)]
    pub reactivate: bool,
}

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// Confirm: without it nothing is changed
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The token to check, or `-` to read it from standard input (keeps it
    /// out of the process list)
    #[arg(value_name = "TOKEN")]
    pub presented: String,
    /// The scope it must cover, e.g. stream:orders:write; omitted, only the
    /// token itself is checked
    #[arg(long, default_value = "", hide_default_value = true, value_parser = short_text)]
    pub scope: String,
    /// The client address it is used from, IP or IP:PORT (needed when the
    /// token is limited to networks)
    #[arg(long, value_name = "IP[:PORT]", value_parser = short_text)]
    pub address: Option<String>,
}

/// A WireName: 1–255 bytes (names, scopes, networks, tokens).
pub fn wire_name(value: &str) -> Result<String, String> {
    match value.len() {
        0 => Err("must not be empty".to_owned()),
        1..=255 => Ok(value.to_owned()),
        _ => Err("must be at most 255 bytes".to_owned()),
    }
}

/// A string with a u8 length: 0–255 bytes (username, password, scope, address).
pub fn short_text(value: &str) -> Result<String, String> {
    if value.len() > 255 { Err("must be at most 255 bytes".to_owned()) } else { Ok(value.to_owned()) }
}

fn positive_duration(value: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(value).map_err(|error| format!("{error} (try 30d, 12h, 90m)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

fn timeout(value: &str) -> Result<Duration, String> {
    positive_duration(value)
}

pub fn expiry(value: &str) -> Result<Expiry, String> {
    match value {
        "never" => Ok(Expiry::Never),
        "default" => Ok(Expiry::ServerDefault),
        duration => positive_duration(duration).map(Expiry::After),
    }
}

pub fn rotate_expiry(value: &str) -> Result<RotateExpiry, String> {
    match value {
        "never" => Ok(RotateExpiry::Never),
        "keep" => Ok(RotateExpiry::Keep),
        duration => positive_duration(duration).map(RotateExpiry::After),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn digits_are_ids_unless_forced() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["latchkey", "token", "show"].iter().chain(args)).unwrap();
            match cli.command {
                Command::Token(TokenCommand::Show(token)) => token.selector().unwrap(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(parse(&["42"]), TokenSelector::Id(42));
        assert_eq!(parse(&["ci-42"]), TokenSelector::Name("ci-42".into()));
        assert_eq!(parse(&["--name", "42"]), TokenSelector::Name("42".into()));
        assert_eq!(parse(&["--id", "7"]), TokenSelector::Id(7));
        // Larger than u64: a name.
        assert_eq!(parse(&["99999999999999999999"]), TokenSelector::Name("99999999999999999999".into()));
        assert!(Cli::try_parse_from(["latchkey", "token", "show"]).is_err());
        assert!(Cli::try_parse_from(["latchkey", "token", "show", "a", "--id", "1"]).is_err());
    }

    #[test]
    fn expiries() {
        assert_eq!(expiry("never"), Ok(Expiry::Never));
        assert_eq!(expiry("default"), Ok(Expiry::ServerDefault));
        assert_eq!(expiry("30d"), Ok(Expiry::After(Duration::from_secs(30 * 86_400))));
        assert!(expiry("0s").is_err());
        assert!(expiry("soon").is_err());
        assert_eq!(rotate_expiry("keep"), Ok(RotateExpiry::Keep));
        assert_eq!(rotate_expiry("never"), Ok(RotateExpiry::Never));
        assert_eq!(rotate_expiry("12h"), Ok(RotateExpiry::After(Duration::from_secs(12 * 3600))));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["latchkey", "token", "list", "--json", "--addr", "h:1"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.addr.as_deref(), Some("h:1"));
        assert!(Cli::try_parse_from(["latchkey", "token", "create", &"n".repeat(256)]).is_err());
    }
}
