//! Runs one parsed command against the server: connect, log in, make the
//! SDK calls, and turn the answers into the text to print.
//!
//! Nothing here prints; main.rs writes the returned [`Report`] in one go.

use latchkey_sdk::{AccessEdit, Client, ClientConfig, NewToken, TokenDetails, TokenSelector, TokenStatus};

use crate::args::{
    AuthorizeArgs, Cli, Command, ConfirmArgs, CreateArgs, ListArgs, NetworksArgs, RotateArgs, ScopesArgs,
    TokenArg, TokenCommand, UpdateArgs,
};
use crate::credentials::{self, Environment, Login};
use crate::failure::Failure;
use crate::render::{self, ChangeJson, DecisionJson, IssuedJson, MeJson, TokenJson};
use crate::time;

/// Tokens asked for per ListTokens request: the server's page maximum.
const LIST_PAGE_TOKENS_MAX: u32 = 1000;
/// Scopes or networks one token can carry: they travel as a List8.
const TOKEN_LIST_ITEMS_MAX: usize = u8::MAX as usize;
/// Edits of one `token scopes` or `token networks`: their count travels as a u8.
const ACCESS_EDITS_MAX: usize = u8::MAX as usize;

/// What a command produced: text for standard output, and whether it was an
/// Authorize that said no (exit code 3, not a failure).
pub struct Report {
    pub stdout: String,
    pub denied: bool,
}

impl Report {
    fn printed(stdout: String) -> Report {
        Report { stdout, denied: false }
    }
}

/// A logged-in connection, and how it logged in.
struct Session {
    client: Client,
    address: String,
    login: Login,
    json: bool,
}

impl Session {
    /// Maps an SDK error from a request after the login.
    fn failed(&self) -> impl Fn(latchkey_sdk::Error) -> Failure + '_ {
        |error| Failure::from_sdk(&self.address, error)
    }
}

pub async fn run(cli: Cli) -> Result<Report, Failure> {
    let env = Environment::read()?;
    let address = credentials::address(&cli.global, &env);
    let mut config = ClientConfig::new(address.clone());
    config.request_timeout = cli.global.timeout;
    if let Command::Ping = cli.command {
        return ping(config, cli.global.json).await;
    }
    // Usage errors come first: before a password prompt, and without
    // waiting on the network.
    if let Command::Token(command) = &cli.command {
        check_usage(command)?;
    }
    let login = credentials::login(&cli.global, &env, credentials::prompt_on_terminal)?;
    let mut client =
        Client::connect_with(config).await.map_err(|error| Failure::from_sdk(&address, error))?;
    let logged_in = match &login {
        Login::Password { username, password } => client.login_user(username, password).await,
        Login::Token(token) => client.login_with_personal_access_token(token).await,
    };
    logged_in.map_err(|error| Failure::from_login(&address, error))?;
    let mut session = Session { client, address, login, json: cli.global.json };
    match cli.command {
        Command::Ping => unreachable!("handled before the login"),
        Command::Completions(_) | Command::Man(_) => unreachable!("handled in main, offline"),
        Command::Me => me(&mut session).await,
        Command::Authorize(args) => authorize(&mut session, args).await,
        Command::Token(command) => token(&mut session, command).await,
    }
}

fn check_usage(command: &TokenCommand) -> Result<(), Failure> {
    let token = match command {
        TokenCommand::Create(args) => {
            for (items, what) in [(&args.scopes, "--scope"), (&args.networks, "--network")] {
                if items.len() > TOKEN_LIST_ITEMS_MAX {
                    return Err(Failure::Usage(format!("at most 255 {what} values")));
                }
            }
            return Ok(());
        }
        TokenCommand::RevokeAll(ConfirmArgs { yes: false }) => {
            return Err(Failure::Usage("token revoke-all revokes every token of yours: add --yes".into()));
        }
        TokenCommand::DeleteAll(ConfirmArgs { yes: false }) => {
            return Err(Failure::Usage("token delete-all deletes every token of yours: add --yes".into()));
        }
        TokenCommand::Update(args) if args.new_name.is_none() && args.description.is_none() => {
            return Err(Failure::Usage("nothing to update: give --new-name and/or --description".into()));
        }
        TokenCommand::Update(args) => &args.token,
        TokenCommand::Scopes(args) => {
            access_usage("scopes", &args.add, &args.remove, args.clear)?;
            &args.token
        }
        TokenCommand::Networks(args) => {
            access_usage("networks", &args.add, &args.remove, args.clear)?;
            &args.token
        }
        TokenCommand::Rotate(args) => &args.token,
        TokenCommand::Show(token) | TokenCommand::Revoke(token) | TokenCommand::Delete(token) => token,
        TokenCommand::List(_) | TokenCommand::RevokeAll(_) | TokenCommand::DeleteAll(_) => return Ok(()),
    };
    token.selector().map(drop).map_err(Failure::Usage)
}

/// `token scopes` and `token networks` change something, within one request.
fn access_usage(what: &str, add: &[String], remove: &[String], clear: bool) -> Result<(), Failure> {
    if add.is_empty() && remove.is_empty() && !clear {
        return Err(Failure::Usage(format!(
            "nothing to change in the {what}: give --add, --remove and/or --clear"
        )));
    }
    if add.len() + remove.len() + usize::from(clear) > ACCESS_EDITS_MAX {
        return Err(Failure::Usage(format!("at most {ACCESS_EDITS_MAX} --add, --remove and --clear in all")));
    }
    Ok(())
}

async fn ping(config: ClientConfig, json: bool) -> Result<Report, Failure> {
    let address = config.address.clone();
    let failed = |error| Failure::from_sdk(&address, error);
    let mut client = Client::connect_with(config).await.map_err(failed)?;
    let started = std::time::Instant::now();
    client.ping().await.map_err(failed)?;
    let round_trip_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if json {
        #[derive(serde::Serialize)]
        struct PingJson<'a> {
            address: &'a str,
            round_trip_us: u64,
        }
        return Ok(Report::printed(render::json(&PingJson { address: &address, round_trip_us })));
    }
    Ok(Report::printed(format!("pong from {address} in {:.2} ms\n", round_trip_us as f64 / 1000.0)))
}

async fn me(session: &mut Session) -> Result<Report, Failure> {
    let details = session.client.get_me().await.map_err(session.failed())?;
    let (login, username) = match &session.login {
        Login::Password { username, .. } => ("password", Some(username.as_str())),
        Login::Token(_) => ("token", None),
    };
    let me = MeJson {
        user_id: details.user_id,
        username,
        login,
        client_id: details.client_id,
        address: &details.address,
    };
    Ok(Report::printed(if session.json { render::json(&me) } else { render::me(&me) }))
}

async fn authorize(session: &mut Session, args: AuthorizeArgs) -> Result<Report, Failure> {
    let presented = if args.presented == "-" { read_token_from_stdin()? } else { args.presented };
    let answer = session
        .client
        .authorize(&presented, &args.scope, args.address.as_deref())
        .await
        .map_err(session.failed())?;
    let stdout = if session.json {
        render::json(&DecisionJson::of(&answer))
    } else {
        render::decision(&answer, time::now_us())
    };
    Ok(Report { stdout, denied: !answer.allowed() })
}

/// `authorize -`: the token is the first line of standard input.
fn read_token_from_stdin() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|error| Failure::Usage(format!("cannot read the token from standard input: {error}")))?;
    crate::args::wire_name(line.trim_end_matches(['\n', '\r']))
        .map_err(|reason| Failure::Usage(format!("the token on standard input {reason}")))
}

async fn token(session: &mut Session, command: TokenCommand) -> Result<Report, Failure> {
    // check_usage has accepted every selector already.
    let selector = |token: &TokenArg| token.selector().map_err(Failure::Usage);
    match command {
        TokenCommand::Create(args) => create(session, args).await,
        TokenCommand::List(args) => list(session, args).await,
        TokenCommand::Show(token) => show(session, selector(&token)?).await,
        TokenCommand::Update(args) => update(session, args).await,
        TokenCommand::Scopes(ScopesArgs { token, add, remove, clear }) => {
            let edits = ordered(clear.then_some(AccessEdit::ClearScopes), remove, add, |remove, item| {
                if remove { AccessEdit::RemoveScope(item) } else { AccessEdit::AddScope(item) }
            });
            edit_access(session, &token, edits, "scopes").await
        }
        TokenCommand::Networks(NetworksArgs { token, add, remove, clear }) => {
            let edits = ordered(clear.then_some(AccessEdit::ClearNetworks), remove, add, |remove, item| {
                if remove { AccessEdit::RemoveNetwork(item) } else { AccessEdit::AddNetwork(item) }
            });
            edit_access(session, &token, edits, "networks").await
        }
        TokenCommand::Revoke(token) => {
            let selector = selector(&token)?;
            session.client.revoke_token(selector.clone()).await.map_err(session.failed())?;
            Ok(changed(session, "revoke", "Revoked", &selector))
        }
        TokenCommand::Rotate(args) => rotate(session, args).await,
        TokenCommand::Delete(token) => {
            let selector = selector(&token)?;
            session.client.delete_token(selector.clone()).await.map_err(session.failed())?;
            Ok(changed(session, "delete", "Deleted", &selector))
        }
        TokenCommand::RevokeAll(_) => {
            let count = session.client.revoke_all_tokens().await.map_err(session.failed())?;
            Ok(counted(session, "revoke_all", "Revoked", count))
        }
        TokenCommand::DeleteAll(_) => {
            let count = session.client.delete_all_tokens().await.map_err(session.failed())?;
            Ok(counted(session, "delete_all", "Deleted", count))
        }
    }
}

async fn create(session: &mut Session, args: CreateArgs) -> Result<Report, Failure> {
    let mut new = NewToken::named(&args.name).with_description(args.description).with_expiry(args.expires);
    new.scopes = args.scopes;
    new.networks = args.networks;
    let issued = session.client.create_token(&new).await.map_err(session.failed())?;
    Ok(Report::printed(if session.json {
        render::json(&IssuedJson::of(&issued, Some(&args.name)))
    } else {
        render::issued(&issued, Some(&args.name), "Created", time::now_us())
    }))
}

async fn list(session: &mut Session, args: ListArgs) -> Result<Report, Failure> {
    let filter = args.status.filter();
    let now = time::now_us();
    // Filtered here: the binary protocol's list carries no expiry filter
    // (the REST API's `expiring_within` is the same rule, on the server).
    let horizon = args
        .expiring_within
        .map(|within| now.saturating_add(u64::try_from(within.as_micros()).unwrap_or(u64::MAX)));
    let expiring = |token: &TokenDetails| {
        horizon.is_none_or(|horizon| {
            token.status == TokenStatus::Active && token.expires_at_us != 0 && token.expires_at_us <= horizon
        })
    };
    let mut tokens = Vec::new();
    let mut after_id = 0;
    loop {
        let wanted = args.limit.map_or(LIST_PAGE_TOKENS_MAX, |limit| {
            (limit - u32::try_from(tokens.len()).unwrap_or(u32::MAX)).min(LIST_PAGE_TOKENS_MAX)
        });
        let page = session.client.list_tokens(filter, after_id, wanted).await.map_err(session.failed())?;
        tokens.extend(page.tokens.into_iter().filter(|token| expiring(token)));
        let full = args.limit.is_some_and(|limit| tokens.len() >= limit as usize);
        if page.next_after_id == 0 || full {
            break;
        }
        after_id = page.next_after_id;
    }
    if let Some(limit) = args.limit {
        tokens.truncate(limit as usize);
    }
    Ok(Report::printed(if session.json {
        render::json(&tokens.iter().map(TokenJson::of).collect::<Vec<_>>())
    } else {
        render::token_table(&tokens, now)
    }))
}

async fn show(session: &mut Session, selector: TokenSelector) -> Result<Report, Failure> {
    let token = session.client.get_token(selector).await.map_err(session.failed())?;
    Ok(Report::printed(if session.json {
        render::json(&TokenJson::of(&token))
    } else {
        render::token_fields(&token, time::now_us())
    }))
}

async fn update(session: &mut Session, args: UpdateArgs) -> Result<Report, Failure> {
    let selector = args.token.selector().map_err(Failure::Usage)?;
    session
        .client
        .update_token(selector.clone(), args.new_name.as_deref(), args.description.as_deref())
        .await
        .map_err(session.failed())?;
    Ok(changed(session, "update", "Updated", &selector))
}

/// The edits of `token scopes` or `token networks` in the order they apply:
/// the clear, then the removes, then the adds.
fn ordered(
    clear: Option<AccessEdit>,
    remove: Vec<String>,
    add: Vec<String>,
    edit: fn(bool, String) -> AccessEdit,
) -> Vec<AccessEdit> {
    let removes = remove.into_iter().map(|item| edit(true, item));
    let adds = add.into_iter().map(|item| edit(false, item));
    clear.into_iter().chain(removes).chain(adds).collect()
}

async fn edit_access(
    session: &mut Session,
    token: &TokenArg,
    edits: Vec<AccessEdit>,
    what: &'static str,
) -> Result<Report, Failure> {
    let selector = token.selector().map_err(Failure::Usage)?;
    // Cleared and nothing added: the list is empty now, whatever it held.
    let emptied = matches!(edits.first(), Some(AccessEdit::ClearScopes | AccessEdit::ClearNetworks))
        && !edits.iter().any(|edit| matches!(edit, AccessEdit::AddScope(_) | AccessEdit::AddNetwork(_)));
    session.client.edit_token_access(selector.clone(), edits).await.map_err(session.failed())?;
    let mut report = changed(session, what, &format!("Updated the {what} of"), &selector);
    if emptied && !session.json {
        let meaning = if what == "scopes" { "full access" } else { "usable from any address" };
        report.stdout.push_str(&format!("It has no {what} now: {meaning}.\n"));
    }
    Ok(report)
}

async fn rotate(session: &mut Session, args: RotateArgs) -> Result<Report, Failure> {
    let selector = args.token.selector().map_err(Failure::Usage)?;
    let issued = if args.reactivate {
        session.client.reactivate_token(selector.clone(), args.expires).await
    } else {
        session.client.rotate_token(selector.clone(), args.expires).await
    };
    let issued = issued.map_err(session.failed())?;
    // Rotated by id, the name is not known without another request (which
    // a token limited to tokens:write could not make): JSON says null.
    let name = match &selector {
        TokenSelector::Name(name) => Some(name.as_str()),
        TokenSelector::Id(_) => None,
    };
    Ok(Report::printed(if session.json {
        render::json(&IssuedJson::of(&issued, name))
    } else {
        let mut text = render::issued(&issued, name, "Rotated", time::now_us());
        if args.reactivate {
            text.insert_str(0, "The token is active. The old secret no longer works.\n");
        } else {
            text.insert_str(0, "The old secret no longer works.\n");
        }
        text
    }))
}

/// The report of a command that changed one token.
fn changed(session: &Session, action: &'static str, done: &str, selector: &TokenSelector) -> Report {
    let (id, name) = match selector {
        TokenSelector::Id(id) => (Some(*id), None),
        TokenSelector::Name(name) => (None, Some(name.as_str())),
    };
    if session.json {
        return Report::printed(render::json(&ChangeJson { action, id, name, count: None }));
    }
    Report::printed(match selector {
        TokenSelector::Id(id) => format!("{done} token {id}.\n"),
        TokenSelector::Name(name) => format!("{done} token {name:?}.\n"),
    })
}

/// The report of a command that changed all of the caller's tokens.
fn counted(session: &Session, action: &'static str, done: &str, count: u32) -> Report {
    if session.json {
        return Report::printed(render::json(&ChangeJson {
            action,
            id: None,
            name: None,
            count: Some(count),
        }));
    }
    let plural = if count == 1 { "" } else { "s" };
    Report::printed(format!("{done} {count} token{plural}.\n"))
}
