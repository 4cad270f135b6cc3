//! What each command prints: the human text and the `--json` shapes.
//!
//! The JSON field names are an interface for scripts (listed in
//! cli/README.md): the structs below are the one place they are spelled.
//! Timestamps appear twice in JSON: as RFC 3339 (`*_at`) for people and
//! jq, and as the protocol's µs since the epoch (`*_at_us`) for exact
//! comparison; both are `null` for "never" / "none".
//!
//! Only [`issued`] ever prints a token secret.

use serde::Serialize;

use latchkey_sdk::{AuthorizeDecision, Decision, IssuedToken, TokenDetails};

use crate::table::Table;
use crate::time;

/// Protocol timestamps: 0 means never / none.
fn at(at_us: u64) -> Option<u64> {
    (at_us != 0).then_some(at_us)
}

fn at_rfc3339(at_us: u64) -> Option<String> {
    at(at_us).map(time::rfc3339)
}

/// "2026-12-01 14:03:09 UTC (in 3 days)", or `none`.
fn when(at_us: u64, now_us: u64, none: &str) -> String {
    match at(at_us) {
        Some(at_us) => format!("{} ({})", time::date_time(at_us), time::relative(at_us, now_us)),
        None => none.to_owned(),
    }
}

pub fn json<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("output shapes serialize");
    text.push('\n');
    text
}

#[derive(Serialize)]
pub struct TokenJson<'a> {
    id: u64,
    name: &'a str,
    description: &'a str,
    /// `active`, `revoked` or `expired`.
    status: &'static str,
    created_at: Option<String>,
    created_at_us: Option<u64>,
    expires_at: Option<String>,
    expires_at_us: Option<u64>,
    revoked_at: Option<String>,
    revoked_at_us: Option<u64>,
    last_used_at: Option<String>,
    last_used_at_us: Option<u64>,
    last_used_address: Option<&'a str>,
    /// Empty: full access.
    scopes: &'a [String],
    /// Empty: any address.
    networks: &'a [String],
}

impl<'a> TokenJson<'a> {
    pub fn of(token: &'a TokenDetails) -> TokenJson<'a> {
        TokenJson {
            id: token.id,
            name: &token.name,
            description: &token.description,
            status: token.status.as_str(),
            created_at: at_rfc3339(token.created_at_us),
            created_at_us: at(token.created_at_us),
            expires_at: at_rfc3339(token.expires_at_us),
            expires_at_us: at(token.expires_at_us),
            revoked_at: at_rfc3339(token.revoked_at_us),
            revoked_at_us: at(token.revoked_at_us),
            last_used_at: at_rfc3339(token.last_used_at_us),
            last_used_at_us: at(token.last_used_at_us),
            last_used_address: (!token.last_used_address.is_empty()).then_some(&token.last_used_address),
            scopes: &token.scopes,
            networks: &token.networks,
        }
    }
}

fn scopes_text(scopes: &[String]) -> String {
    if scopes.is_empty() { "(all)".to_owned() } else { scopes.join(",") }
}

fn last_used(token: &TokenDetails, now_us: u64, relative_only: bool) -> String {
    let Some(at_us) = at(token.last_used_at_us) else { return "never".to_owned() };
    let when = if relative_only { time::relative(at_us, now_us) } else { when(at_us, now_us, "") };
    if token.last_used_address.is_empty() { when } else { format!("{when} from {}", token.last_used_address) }
}

/// `token list`: one row per token.
pub fn token_table(tokens: &[TokenDetails], now_us: u64) -> String {
    let mut table = Table::new(&["ID", "NAME", "STATUS", "EXPIRES", "LAST USED", "SCOPES"]);
    for token in tokens {
        let expires = match at(token.expires_at_us) {
            Some(at_us) => format!("{} ({})", time::date(at_us), time::relative(at_us, now_us)),
            None => "never".to_owned(),
        };
        table.row(vec![
            token.id.to_string(),
            token.name.clone(),
            token.status.as_str().to_owned(),
            expires,
            last_used(token, now_us, true),
            scopes_text(&token.scopes),
        ]);
    }
    table.render()
}

/// `token show`: every field on its own line.
pub fn token_fields(token: &TokenDetails, now_us: u64) -> String {
    let networks =
        if token.networks.is_empty() { "(any address)".to_owned() } else { token.networks.join(",") };
    let description = if token.description.is_empty() { "(none)" } else { &token.description };
    let fields = [
        ("id", token.id.to_string()),
        ("name", token.name.clone()),
        ("description", description.to_owned()),
        ("status", token.status.as_str().to_owned()),
        ("created", when(token.created_at_us, now_us, "unknown")),
        ("expires", when(token.expires_at_us, now_us, "never")),
        ("revoked", when(token.revoked_at_us, now_us, "no")),
        ("last used", last_used(token, now_us, false)),
        (
            "scopes",
            if token.scopes.is_empty() { "(all: full access)".to_owned() } else { token.scopes.join(",") },
        ),
        ("networks", networks),
    ];
    let mut out = String::new();
    for (label, value) in fields {
        out.push_str(&format!("{:<12} {value}\n", format!("{label}:")));
    }
    out
}

/// `token create` / `token rotate` with `--json`: the only JSON with a secret.
#[derive(Serialize)]
pub struct IssuedJson<'a> {
    id: u64,
    /// `null` after a rotate by id.
    name: Option<&'a str>,
    token: &'a str,
    created_at: Option<String>,
    created_at_us: Option<u64>,
    expires_at: Option<String>,
    expires_at_us: Option<u64>,
}

impl<'a> IssuedJson<'a> {
    pub fn of(issued: &'a IssuedToken, name: Option<&'a str>) -> IssuedJson<'a> {
        IssuedJson {
            id: issued.id,
            name,
            token: issued.token.expose(),
            created_at: at_rfc3339(issued.created_at_us),
            created_at_us: at(issued.created_at_us),
            expires_at: at_rfc3339(issued.expires_at_us),
            expires_at_us: at(issued.expires_at_us),
        }
    }
}

/// `token create` / `token rotate`: the secret, once, said to be shown once.
/// `done` is "Created" or "Rotated".
pub fn issued(issued: &IssuedToken, name: Option<&str>, done: &str, now_us: u64) -> String {
    let expires = when(issued.expires_at_us, now_us, "never");
    let name = name.map(|name| format!("{name:?} ")).unwrap_or_default();
    format!(
        "{done} token {name}(id {}), expires: {expires}.\n\
         Copy the token now: it will not be shown again.\n\n\
         {}\n",
        issued.id,
        issued.token.expose()
    )
}

/// Why Authorize said no, for people.
fn decision_reason(decision: Decision) -> &'static str {
    match decision {
        Decision::Allowed => "allowed",
        Decision::Unknown => "no such token",
        Decision::Expired => "the token has expired",
        Decision::Revoked => "the token was revoked",
        Decision::Scope => "the token's scopes do not cover the scope asked for",
        Decision::Network => "the address is outside the token's networks (or was not given)",
        Decision::InactiveUser => "the token's owner is marked inactive",
    }
}

#[derive(Serialize)]
pub struct DecisionJson<'a> {
    allowed: bool,
    /// `allowed`, `unknown`, `expired`, `revoked`, `scope`, `network`, `inactive_user`.
    decision: &'static str,
    /// The token found; all `null` when the decision is `unknown`.
    user_id: Option<u32>,
    username: Option<&'a str>,
    token_id: Option<u64>,
    expires_at: Option<String>,
    expires_at_us: Option<u64>,
}

impl<'a> DecisionJson<'a> {
    pub fn of(answer: &'a AuthorizeDecision) -> DecisionJson<'a> {
        let found = answer.decision != Decision::Unknown;
        DecisionJson {
            allowed: answer.allowed(),
            decision: answer.decision.as_str(),
            user_id: found.then_some(answer.user_id),
            username: found.then_some(answer.username.as_str()),
            token_id: found.then_some(answer.token_id),
            expires_at: at_rfc3339(answer.expires_at_us).filter(|_| found),
            expires_at_us: at(answer.expires_at_us).filter(|_| found),
        }
    }
}

pub fn decision(answer: &AuthorizeDecision, now_us: u64) -> String {
    let mut out = if answer.allowed() {
        "allowed\n".to_owned()
    } else {
        format!("denied ({}): {}\n", answer.decision.as_str(), decision_reason(answer.decision))
    };
    if answer.decision != Decision::Unknown {
        out.push_str(&format!("user:     {} (id {})\n", answer.username, answer.user_id));
        out.push_str(&format!("token id: {}\n", answer.token_id));
        out.push_str(&format!("expires:  {}\n", when(answer.expires_at_us, now_us, "never")));
    }
    out
}

/// Result of a command that changes one token or all of them.
#[derive(Serialize)]
pub struct ChangeJson<'a> {
    /// `update`, `scopes`, `networks`, `revoke`, `delete`, `revoke_all`, `delete_all`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Tokens affected, for the all-token commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

#[derive(Serialize)]
pub struct MeJson<'a> {
    pub user_id: u32,
    /// Known when the login was with a password; `null` with a token.
    pub username: Option<&'a str>,
    /// `password` or `token`.
    pub login: &'static str,
    pub client_id: u32,
    /// This connection's address as the server sees it.
    pub address: &'a str,
}

pub fn me(me: &MeJson<'_>) -> String {
    let mut out = format!("user id:   {}\n", me.user_id);
    if let Some(username) = me.username {
        out.push_str(&format!("username:  {username}\n"));
    }
    let login = if me.login == "token" { "with a personal access token" } else { "with a password" };
    out.push_str(&format!("logged in: {login}\n"));
    out.push_str(&format!("client id: {}\n", me.client_id));
    out.push_str(&format!("address:   {}\n", me.address));
    out
}

#[cfg(test)]
mod tests {
    use latchkey_sdk::TokenStatus;

    use super::*;

    const DAY_US: u64 = 86_400 * 1_000_000;
    const NOW_US: u64 = 1_780_000_000 * 1_000_000;

    fn token() -> TokenDetails {
        TokenDetails {
            id: 7,
            name: "ci-deploy".into(),
            description: "deploys".into(),
            status: TokenStatus::Active,
            created_at_us: NOW_US - DAY_US,
            expires_at_us: NOW_US + 3 * DAY_US,
            revoked_at_us: 0,
            last_used_at_us: NOW_US - 2 * 3600 * 1_000_000,
            last_used_address: "127.0.0.1:5000".into(),
            scopes: vec!["tokens:read".into(), "stream:orders:*".into()],
            networks: vec![],
        }
    }

    #[test]
    fn the_table_shows_expiry_as_date_and_relative() {
        let mut never = token();
        never.id = 8;
        never.name = "forever".into();
        never.expires_at_us = 0;
        never.last_used_at_us = 0;
        never.last_used_address.clear();
        never.scopes.clear();
        let table = token_table(&[token(), never], NOW_US);
        let expected = [
            "ID  NAME       STATUS  EXPIRES                 LAST USED                        SCOPES",
            "7   ci-deploy  active  2026-05-31 (in 3 days)  2 hours ago from 127.0.0.1:5000  tokens:read,stream:orders:*",
            "8   forever    active  never                   never                            (all)",
        ];
        assert_eq!(table.lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn show_has_one_line_per_field() {
        let text = token_fields(&token(), NOW_US);
        assert_eq!(text.lines().count(), 10);
        assert!(text.contains("expires:     2026-05-31 20:26:40 UTC (in 3 days)\n"), "{text}");
        assert!(text.contains("revoked:     no\n"), "{text}");
        assert!(text.contains("networks:    (any address)\n"), "{text}");
    }

    #[test]
    fn json_uses_null_for_never() {
        let mut details = token();
        details.expires_at_us = 0;
        let value: serde_json::Value = serde_json::from_str(&json(&TokenJson::of(&details))).unwrap();
        assert_eq!(value["expires_at"], serde_json::Value::Null);
        assert_eq!(value["expires_at_us"], serde_json::Value::Null);
        assert_eq!(value["created_at"], "2026-05-27T20:26:40Z");
        assert_eq!(value["status"], "active");
        assert_eq!(value["last_used_address"], "127.0.0.1:5000");
    }
}
