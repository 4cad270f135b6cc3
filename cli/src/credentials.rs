//! Where the login comes from: the command line, else the environment, else
//! a password prompt on the terminal. The rules are in `latchkey --help`
//! (args.rs) and cli/README.md; this file is their only implementation.
//!
//! A password or token is never formatted into a message: `Login`'s Debug
//! hides both.

use std::fmt;
use std::io::IsTerminal;

use crate::args::{GlobalArgs, short_text, wire_name};
use crate::failure::Failure;

/// Where the server is when neither --addr nor LATCHKEY_ADDR says.
pub const ADDRESS_DEFAULT: &str = "127.0.0.1:8090";

pub enum Login {
    Password { username: String, password: String },
    Token(String),
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Password { username, .. } => write!(f, "Password {{ username: {username:?}, .. }}"),
            Login::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// The `LATCHKEY_*` variables, read once. An empty variable counts as unset.
#[derive(Default)]
pub struct Environment {
    pub addr: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl Environment {
    pub fn read() -> Result<Environment, Failure> {
        Ok(Environment {
            addr: variable("LATCHKEY_ADDR")?,
            username: variable("LATCHKEY_USERNAME")?,
            password: variable("LATCHKEY_PASSWORD")?,
            token: variable("LATCHKEY_TOKEN")?,
        })
    }
}

fn variable(name: &str) -> Result<Option<String>, Failure> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::Usage(format!("{name} is not valid UTF-8"))),
    }
}

pub fn address(global: &GlobalArgs, env: &Environment) -> String {
    global.addr.clone().or_else(|| env.addr.clone()).unwrap_or_else(|| ADDRESS_DEFAULT.to_owned())
}

/// The login for a command that needs one. `prompt` asks for the password
/// of the user it is given (the terminal prompt, or a stand-in in tests).
pub fn login(
    global: &GlobalArgs,
    env: &Environment,
    prompt: impl FnOnce(&str) -> Result<String, Failure>,
) -> Result<Login, Failure> {
    let from_command_line = global.token.is_some() || global.username.is_some();
    let (token, username) = if from_command_line {
        (global.token.clone(), global.username.clone())
    } else {
        let token = env.token.as_deref().map(|token| checked(token, "LATCHKEY_TOKEN", wire_name));
        let username = env.username.as_deref().map(|name| checked(name, "LATCHKEY_USERNAME", short_text));
        (token.transpose()?, username.transpose()?)
    };
    if let Some(token) = token {
        return Ok(Login::Token(token));
    }
    let Some(username) = username else {
        return Err(Failure::Usage(
            "no credentials: give --username (with --password, or be prompted) or --token, \
             or set LATCHKEY_USERNAME or LATCHKEY_TOKEN"
                .to_owned(),
        ));
    };
    let password = match (&global.password, &env.password) {
        (Some(password), _) => password.clone(),
        (None, Some(password)) => checked(password, "LATCHKEY_PASSWORD", short_text)?,
        (None, None) => prompt(&username)?,
    };
    Ok(Login::Password { username, password })
}

/// Applies an argument parser to an environment variable; the message names
/// the variable, never its value.
fn checked(value: &str, name: &str, parse: fn(&str) -> Result<String, String>) -> Result<String, Failure> {
    parse(value).map_err(|reason| Failure::Usage(format!("{name} {reason}")))
}

/// Asks for `username`'s password on the terminal, with echo off. Standard
/// input must be a terminal: a script should say --password or
/// LATCHKEY_PASSWORD rather than hang on a prompt nobody sees.
///
/// The prompt goes to standard error. rpassword reads the password: it turns
/// echo and line mode off, edits the line itself (Backspace, Ctrl-U, Ctrl-W)
/// and prints the newline after Enter. It would use /dev/tty; the terminal
/// checked here is standard input's, so it is pointed there. On Ctrl-C it
/// raises SIGINT before restoring the terminal: bash restores its own
/// settings when a job dies by a signal; under shells that do not,
/// `stty sane` does.
pub fn prompt_on_terminal(username: &str) -> Result<String, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(format!(
            "no password for user {username:?}: give --password or set LATCHKEY_PASSWORD \
             (standard input is not a terminal to prompt on)"
        )));
    }
    eprint!("Password for {username}: ");
    let terminal = rpassword::ConfigBuilder::new()
        .input_file_path(STANDARD_INPUT_PATH)
        .output_file_path(STANDARD_INPUT_PATH)
        .build();
    // rpassword ends the password at the newline (or carriage return) and
    // leaves it out; Ctrl-D on an empty line is its end of file.
    let password = match rpassword::read_password_with_config(terminal) {
        Ok(password) => password,
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Failure::Usage("no password entered".to_owned()));
        }
        Err(error) => return Err(Failure::Usage(format!("cannot read the password: {error}"))),
    };
    short_text(&password).map_err(|reason| Failure::Usage(format!("password {reason}")))
}

/// Standard input's own terminal, opened afresh by path.
const STANDARD_INPUT_PATH: &str = "/dev/stdin";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn flags(username: Option<&str>, password: Option<&str>, token: Option<&str>) -> GlobalArgs {
        GlobalArgs {
            addr: None,
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
            token: token.map(str::to_owned),
            json: false,
            timeout: Duration::from_secs(1),
        }
    }

    fn env(username: Option<&str>, password: Option<&str>, token: Option<&str>) -> Environment {
        Environment {
            addr: None,
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
            token: token.map(str::to_owned),
        }
    }

    fn no_prompt(_: &str) -> Result<String, Failure> {
        panic!("prompted")
    }

    fn describe(login: Result<Login, Failure>) -> String {
        match login {
            Ok(Login::Password { username, password }) => format!("password {username}/{password}"),
            Ok(Login::Token(token)) => format!("token {token}"),
            Err(failure) => format!("exit {}", failure.exit_code()),
        }
    }

    #[test]
    fn the_command_line_beats_the_environment() {
        let environment = env(Some("env-user"), Some("env-pw"), Some("env-token"));
        let login = |global| describe(login(&global, &environment, no_prompt));
        assert_eq!(login(flags(Some("u"), Some("p"), None)), "password u/p");
        // A username on the command line hides the environment's token...
        assert_eq!(login(flags(Some("u"), None, None)), "password u/env-pw");
        // ...and a token on the command line its username.
        assert_eq!(login(flags(None, None, Some("t"))), "token t");
        assert_eq!(login(flags(None, None, None)), "token env-token");
    }

    #[test]
    fn a_token_beats_a_username_from_the_same_source() {
        assert_eq!(
            describe(login(&flags(Some("u"), Some("p"), Some("t")), &env(None, None, None), no_prompt)),
            "token t"
        );
        assert_eq!(
            describe(login(&flags(None, None, None), &env(Some("u"), Some("p"), Some("t")), no_prompt)),
            "token t"
        );
    }

    #[test]
    fn a_missing_password_is_prompted_for() {
        let prompt = |username: &str| Ok(format!("typed-for-{username}"));
        assert_eq!(
            describe(login(&flags(Some("u"), None, None), &env(None, None, None), prompt)),
            "password u/typed-for-u"
        );
        let refuse = |_: &str| Err(Failure::Usage("no terminal".into()));
        assert_eq!(describe(login(&flags(None, None, None), &env(Some("u"), None, None), refuse)), "exit 2");
    }

    #[test]
    fn no_credentials_is_a_usage_error() {
        assert_eq!(
            describe(login(&flags(None, Some("p"), None), &env(None, None, None), no_prompt)),
            "exit 2"
        );
    }

    #[test]
    fn bad_environment_values_are_named_but_not_shown() {
        let long = "x".repeat(300);
        let result = login(&flags(None, None, None), &env(None, None, Some(&long)), no_prompt);
        let Err(failure) = result else { panic!("accepted a 300-byte token") };
        assert_eq!(failure.to_string(), "LATCHKEY_TOKEN must be at most 255 bytes");
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?} {:?}",
            Login::Token("lk_secret".into()),
            Login::Password { username: "u".into(), password: "hunter2".into() }
        );
        assert!(!text.contains("lk_secret") && !text.contains("hunter2"), "{text}");
    }
}
