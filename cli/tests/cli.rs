//! The `latchkey` binary end to end: each test starts the real server on a
//! temporary data directory (root iggy/iggy) and runs the binary as a user
//! would, checking its exit code, standard output and standard error.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use latchkey_tests::{DataHome, ServerSpec, TestServer};
use serde_json::Value;

/// One run of the binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    #[track_caller]
    fn exit(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit code {code}: {self:?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {self:?}"))
    }

    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The binary aimed at `address` with no credentials: every LATCHKEY_*
/// variable of the test's own environment is removed.
fn latchkey(address: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for name in ["LATCHKEY_USERNAME", "LATCHKEY_PASSWORD", "LATCHKEY_TOKEN"] {
        command.env_remove(name);
    }
    command.env("LATCHKEY_ADDR", address.to_string()).stdin(Stdio::null());
    command
}

fn run(mut command: Command, args: &[&str]) -> Run {
    let output = command.args(args).output().expect("run latchkey");
    Run {
        code: output.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs as root, logged in through the environment.
fn root(server: &TestServer, args: &[&str]) -> Run {
    let mut command = latchkey(server.address);
    command.env("LATCHKEY_USERNAME", "iggy").env("LATCHKEY_PASSWORD", "iggy");
    run(command, args)
}

/// Runs logged in with a token given on the command line.
fn with_token(server: &TestServer, token: &str, args: &[&str]) -> Run {
    let mut command = latchkey(server.address);
    command.args(["--token", token]);
    run(command, args)
}

/// Creates a token as root with `--json` and returns (id, secret).
fn create(server: &TestServer, args: &[&str]) -> (u64, String) {
    let created = root(server, &[&["token", "create", "--json"], args].concat()).ok().json();
    let secret = created["token"].as_str().expect("token field").to_owned();
    assert!(secret.starts_with("lk_"), "{created}");
    (created["id"].as_u64().expect("id field"), secret)
}

/// A token's JSON without the last-used fields, which each shard merges in
/// its own time (and which the token's own use above has just changed).
fn settled(mut token: Value) -> Value {
    for field in ["last_used_at", "last_used_at_us", "last_used_address"] {
        token.as_object_mut().expect("a token object").remove(field).expect("every field is present");
    }
    token
}

fn now_us() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    u64::try_from(since.as_micros()).unwrap()
}

fn start() -> (DataHome, TestServer) {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    (home, server)
}

#[test]
fn ping_needs_no_credentials() {
    let (_home, server) = start();
    let run = run(latchkey(server.address), &["ping"]).ok();
    assert!(run.stdout.starts_with(&format!("pong from {} in ", server.address)), "{run:?}");
    let json = self::run(latchkey(server.address), &["ping", "--json"]).ok().json();
    assert_eq!(json["address"], server.address.to_string());
    assert!(json["round_trip_us"].is_u64(), "{json}");
}

#[test]
fn me_with_a_password_and_with_a_token() {
    let (_home, server) = start();
    // From the environment.
    let me = root(&server, &["me"]).ok();
    assert!(me.stdout.contains("user id:   0\n"), "{me:?}");
    assert!(me.stdout.contains("username:  iggy\n"), "{me:?}");
    assert!(me.stdout.contains("logged in: with a password\n"), "{me:?}");
    // From the command line.
    let json =
        run(latchkey(server.address), &["me", "--json", "-u", "iggy", "--password", "iggy"]).ok().json();
    assert_eq!(
        (json["user_id"].as_u64(), json["username"].as_str(), json["login"].as_str()),
        (Some(0), Some("iggy"), Some("password"))
    );
    assert!(json["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{json}");

    let (_, secret) = create(&server, &["reader", "--scope", "me:read"]);
    let json = with_token(&server, &secret, &["me", "--json"]).ok().json();
    assert_eq!((json["user_id"].as_u64(), json["login"].as_str()), (Some(0), Some("token")));
    assert_eq!(json["username"], Value::Null);
    // LATCHKEY_TOKEN works too, and beats LATCHKEY_USERNAME with a wrong password.
    let mut command = latchkey(server.address);
    command.env("LATCHKEY_TOKEN", &secret).env("LATCHKEY_USERNAME", "iggy").env("LATCHKEY_PASSWORD", "wrong");
    let me = run(command, &["me"]).ok();
    assert!(me.stdout.contains("logged in: with a personal access token\n"), "{me:?}");
    // A username on the command line beats the environment's token.
    let mut command = latchkey(server.address);
    command.env("LATCHKEY_TOKEN", &secret).env("LATCHKEY_PASSWORD", "iggy");
    assert!(run(command, &["me", "-u", "iggy"]).ok().stdout.contains("username:  iggy\n"));
}

#[test]
fn create_show_and_list_in_both_formats_never_show_a_secret() {
    let (_home, server) = start();
    let created = root(
        &server,
        &[
            "token",
            "create",
            "ci-deploy",
            "--description",
            "deploys from CI",
            "--expires",
            "30d",
            "--scope",
            "stream:orders:*",
            "--scope",
            "tokens:read",
            "--network",
            "127.0.0.0/8",
            "--network",
            "::1/128",
        ],
    )
    .ok();
    assert!(created.stdout.starts_with("Created token \"ci-deploy\" (id "), "{created:?}");
    assert!(created.stdout.contains("(in 30 days)"), "{created:?}");
    assert!(created.stdout.contains("it will not be shown again"), "{created:?}");
    let secret_line =
        created.stdout.lines().find(|line| line.starts_with("lk_")).expect("the secret, on its own line");
    let mut secrets = vec![secret_line.to_owned()];
    // The secret works.
    assert_eq!(
        with_token(&server, secret_line, &["token", "list", "--json"]).ok().json().as_array().unwrap().len(),
        1
    );

    let (forever_id, forever_secret) = create(&server, &["forever", "--expires", "never"]);
    secrets.push(forever_secret);
    let (_, default_secret) = create(&server, &["default-lifetime"]);
    secrets.push(default_secret);

    let show = root(&server, &["token", "show", "ci-deploy", "--json"]).ok().json();
    assert_eq!(show["name"], "ci-deploy");
    assert_eq!(show["description"], "deploys from CI");
    assert_eq!(show["status"], "active");
    assert_eq!(show["scopes"], serde_json::json!(["stream:orders:*", "tokens:read"]));
    assert_eq!(show["networks"], serde_json::json!(["127.0.0.0/8", "::1/128"]));
    let created_at_us = show["created_at_us"].as_u64().unwrap();
    let expires_at_us = show["expires_at_us"].as_u64().unwrap();
    assert_eq!(expires_at_us - created_at_us, 30 * 86_400 * 1_000_000);
    let expires_at = show["expires_at"].as_str().unwrap().to_owned();
    assert!(expires_at.ends_with('Z') && expires_at.len() == "2026-12-01T00:00:00Z".len(), "{expires_at}");
    assert_eq!(show["revoked_at"], Value::Null);
    // Used once above (the list with the token): connections hand their
    // token uses over when they close, so the use shows at once.
    assert!(show["last_used_at"].is_string(), "{show}");
    assert!(
        show["last_used_address"].as_str().is_some_and(|address| address.starts_with("127.0.0.1:")),
        "{show}"
    );
    let by_id = root(&server, &["token", "show", &show["id"].to_string(), "--json"]).ok().json();
    assert_eq!(settled(by_id), settled(show.clone()));

    let human = root(&server, &["token", "show", "ci-deploy"]).ok();
    let fields: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(fields.len(), 10, "{human:?}");
    assert!(fields.contains(&"description: deploys from CI"), "{human:?}");
    assert!(fields.contains(&"scopes:      stream:orders:*,tokens:read"), "{human:?}");
    let expires_line = format!("expires:     {} {} UTC (in 30 days)", &expires_at[..10], &expires_at[11..19]);
    assert!(fields.contains(&expires_line.as_str()), "{expires_line} in {human:?}");
    let forever = root(&server, &["token", "show", "--id", &forever_id.to_string()]).ok();
    assert!(forever.stdout.contains("expires:     never\n"), "{forever:?}");

    let table = root(&server, &["token", "list"]).ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{table:?}");
    for title in ["ID", "NAME", "STATUS", "EXPIRES", "LAST USED", "SCOPES"] {
        assert!(lines[0].contains(title), "{table:?}");
    }
    assert!(lines[1].contains("ci-deploy"), "{table:?}");
    assert!(lines[1].contains(&format!("{} (in 30 days)", &expires_at[..10])), "{table:?}");
    assert!(lines[1].contains("stream:orders:*,tokens:read"), "{table:?}");
    assert!(lines[2].contains("forever") && lines[2].contains("never"), "{table:?}");
    // The columns line up: every row has its status where the header has STATUS.
    let status_column = lines[0].find("STATUS").unwrap();
    assert!(lines[1..].iter().all(|line| line[status_column..].starts_with("active")), "{table:?}");

    let list = root(&server, &["token", "list", "--json"]).ok().json();
    let names: Vec<&str> =
        list.as_array().unwrap().iter().map(|token| token["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ci-deploy", "forever", "default-lifetime"]);
    assert_eq!(settled(list[0].clone()), settled(show));

    // Only create and rotate ever print a secret.
    let mut outputs = String::new();
    for args in [
        &["token", "list"][..],
        &["token", "list", "--json"],
        &["token", "list", "--status", "active"],
        &["token", "show", "ci-deploy"],
        &["token", "show", "ci-deploy", "--json"],
        &["token", "show", "forever"],
        &["token", "show", "forever", "--json"],
    ] {
        outputs.push_str(&root(&server, args).ok().output());
    }
    assert!(!outputs.contains("lk_"), "{outputs}");
    for secret in &secrets {
        assert!(!outputs.contains(secret.as_str()));
    }
}

#[test]
fn list_filters_by_status_and_stops_at_the_limit() {
    let (_home, server) = start();
    for name in ["tok-a", "tok-b", "tok-c"] {
        create(&server, &[name]);
    }
    root(&server, &["token", "revoke", "tok-b"]).ok();
    let names = |run: Run| -> Vec<String> {
        run.ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|token| token["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(root(&server, &["token", "list", "--json", "--limit", "2"])), ["tok-a", "tok-b"]);
    assert_eq!(names(root(&server, &["token", "list", "--json", "--status", "active"])), ["tok-a", "tok-c"]);
    assert_eq!(names(root(&server, &["token", "list", "--json", "--status", "revoked"])), ["tok-b"]);
    assert_eq!(
        names(root(&server, &["token", "list", "--json", "--status", "expired"])),
        Vec::<String>::new()
    );
    assert_eq!(
        names(root(&server, &["token", "list", "--json", "--status", "active", "--limit", "1"])),
        ["tok-a"]
    );
    root(&server, &["token", "list", "--status", "soon"]).exit(2);
    root(&server, &["token", "list", "--limit", "0"]).exit(2);
}

#[test]
fn a_numeric_argument_is_an_id_unless_named() {
    let (_home, server) = start();
    let (id, _) = create(&server, &["2024"]);
    assert_ne!(id, 2024);
    let missing = root(&server, &["token", "show", "2024"]).exit(1);
    assert!(missing.stderr.contains("error 20 ResourceNotFound"), "{missing:?}");
    assert_eq!(root(&server, &["token", "show", "--name", "2024", "--json"]).ok().json()["id"], id);
    assert_eq!(root(&server, &["token", "show", &id.to_string(), "--json"]).ok().json()["name"], "2024");
    // No token named at all, or two ways at once: usage errors.
    root(&server, &["token", "show"]).exit(2);
    root(&server, &["token", "show", "x", "--id", "1"]).exit(2);
}

#[test]
fn update_renames_and_changes_the_description() {
    let (_home, server) = start();
    let (id, _) = create(&server, &["old-name", "--description", "before"]);
    let updated =
        root(&server, &["token", "update", "old-name", "--new-name", "new-name", "--description", "after"])
            .ok();
    assert_eq!(updated.stdout, "Updated token \"old-name\".\n");
    let show = root(&server, &["token", "show", "new-name", "--json"]).ok().json();
    assert_eq!((show["id"].as_u64(), show["description"].as_str()), (Some(id), Some("after")));
    let json =
        root(&server, &["token", "update", &id.to_string(), "--description", "", "--json"]).ok().json();
    assert_eq!(json, serde_json::json!({"action": "update", "id": id}));
    assert_eq!(root(&server, &["token", "show", "new-name", "--json"]).ok().json()["description"], "");
    root(&server, &["token", "show", "old-name"]).exit(1);
    root(&server, &["token", "update", "new-name"]).exit(2);
}

#[test]
fn rotate_prints_a_new_secret_and_the_old_one_fails_at_once() {
    let (_home, server) = start();
    let (id, old) = create(&server, &["rotating", "--scope", "me:read", "--expires", "30d"]);
    with_token(&server, &old, &["me"]).ok();

    let rotated = root(&server, &["token", "rotate", "rotating"]).ok();
    assert!(rotated.stdout.contains(&format!("Rotated token \"rotating\" (id {id})")), "{rotated:?}");
    assert!(rotated.stdout.contains("it will not be shown again"), "{rotated:?}");
    assert!(rotated.stdout.contains("(in 30 days)"), "kept its expiry: {rotated:?}");
    let new = rotated.stdout.lines().find(|line| line.starts_with("lk_")).expect("the new secret").to_owned();
    assert_ne!(new, old);

    let refused = with_token(&server, &old, &["me"]).exit(5);
    assert!(refused.stderr.contains("login failed: error"), "{refused:?}");
    assert!(!refused.output().contains(&old), "the secret is never echoed: {refused:?}");
    with_token(&server, &new, &["me"]).ok();

    let before_us = now_us();
    let json =
        root(&server, &["token", "rotate", "--id", &id.to_string(), "--expires", "7d", "--json"]).ok().json();
    let after_us = now_us();
    assert_eq!(json["id"], id);
    assert_eq!(json["name"], Value::Null);
    let newest = json["token"].as_str().unwrap();
    // Seven days from the rotation (server and test share the clock).
    let expires_at_us = json["expires_at_us"].as_u64().unwrap();
    let week_us = 7 * 86_400 * 1_000_000;
    assert!((before_us + week_us..=after_us + week_us).contains(&expires_at_us), "{json}");
    with_token(&server, &new, &["me"]).exit(5);
    with_token(&server, newest, &["me"]).ok();
    let json = root(&server, &["token", "rotate", "rotating", "--expires", "never", "--json"]).ok().json();
    assert_eq!(json["expires_at"], Value::Null);
}

#[test]
fn scopes_and_networks_are_added_removed_and_cleared() {
    let (_home, server) = start();
    let (id, secret) = create(
        &server,
        &["edited", "--scope", "tokens:read", "--network", "10.0.0.0/8", "--network", "127.0.0.0/8"],
    );
    let show = |selector: &str| root(&server, &["token", "show", selector, "--json"]).ok().json();

    let added =
        root(&server, &["token", "scopes", "edited", "--add", "me:read", "--add", "stream:*:read"]).ok();
    assert_eq!(added.stdout, "Updated the scopes of token \"edited\".\n");
    assert_eq!(show("edited")["scopes"], serde_json::json!(["tokens:read", "me:read", "stream:*:read"]));
    // Removes apply before adds, in one change.
    let json = root(
        &server,
        &["token", "scopes", &id.to_string(), "--remove", "tokens:read", "--add", "tokens:write", "--json"],
    )
    .ok()
    .json();
    assert_eq!(json, serde_json::json!({"action": "scopes", "id": id}));
    assert_eq!(show("edited")["scopes"], serde_json::json!(["me:read", "stream:*:read", "tokens:write"]));
    // A login after the edit has the scopes as they are now.
    with_token(&server, &secret, &["me"]).ok();
    root(&server, &["token", "scopes", "edited", "--clear", "--add", "me:read"]).ok();
    assert_eq!(show("edited")["scopes"], serde_json::json!(["me:read"]));
    with_token(&server, &secret, &["token", "list"]).exit(1);
    let cleared = root(&server, &["token", "scopes", "edited", "--clear"]).ok();
    assert_eq!(
        cleared.stdout,
        "Updated the scopes of token \"edited\".\nIt has no scopes now: full access.\n"
    );
    assert_eq!(show("edited")["scopes"], serde_json::json!([]));

    let networks =
        root(&server, &["token", "networks", "edited", "--add", "127.0.0.1", "--remove", "10.0.0.0/8"]);
    assert_eq!(networks.ok().stdout, "Updated the networks of token \"edited\".\n");
    assert_eq!(show("edited")["networks"], serde_json::json!(["127.0.0.0/8", "127.0.0.1/32"]));
    with_token(&server, &secret, &["me"]).ok();
    let cleared = root(&server, &["token", "networks", "--name", "edited", "--clear"]).ok();
    assert!(cleared.stdout.ends_with("It has no networks now: usable from any address.\n"), "{cleared:?}");
    assert_eq!(show("edited")["networks"], serde_json::json!([]));

    // The server's refusals exit 1 with the code; nothing to change is usage.
    let refused = root(&server, &["token", "scopes", "edited", "--add", "not a scope"]).exit(1);
    assert!(refused.stderr.contains("20007"), "{refused:?}");
    let refused = root(&server, &["token", "networks", "edited", "--add", "10.0.0.1/8"]).exit(1);
    assert!(refused.stderr.contains("20008"), "{refused:?}");
    root(&server, &["token", "scopes", "no-such-token", "--add", "me:read"]).exit(1);
    let usage = root(&server, &["token", "scopes", "edited"]).exit(2);
    assert!(usage.stderr.contains("--add, --remove and/or --clear"), "{usage:?}");
    root(&server, &["token", "networks", "edited", "--add", ""]).exit(2);
}

#[test]
fn rotate_with_reactivate_brings_a_revoked_token_back() {
    let (_home, server) = start();
    let (id, old) = create(&server, &["comeback", "--scope", "me:read", "--expires", "30d"]);
    root(&server, &["token", "revoke", "comeback"]).ok();
    // A plain rotate of a revoked token is refused, as it always was.
    let refused = root(&server, &["token", "rotate", "comeback"]).exit(1);
    assert!(refused.stderr.contains("20003"), "{refused:?}");

    let back = root(&server, &["token", "rotate", "comeback", "--reactivate"]).ok();
    assert!(back.stdout.starts_with("The token is active. The old secret no longer works.\n"), "{back:?}");
    assert!(back.stdout.contains(&format!("Rotated token \"comeback\" (id {id})")), "{back:?}");
    let new = back.stdout.lines().find(|line| line.starts_with("lk_")).expect("the new secret").to_owned();
    with_token(&server, &new, &["me"]).ok();
    with_token(&server, &old, &["me"]).exit(5);
    let shown = root(&server, &["token", "show", "comeback", "--json"]).ok().json();
    assert_eq!((shown["status"].as_str(), shown["revoked_at"].is_null()), (Some("active"), true), "{shown}");
    assert_eq!(shown["scopes"], serde_json::json!(["me:read"]));
}

#[test]
fn revoke_keeps_the_token_listed_and_delete_removes_it() {
    let (_home, server) = start();
    let (revoked_id, revoked_secret) = create(&server, &["to-revoke"]);
    let (deleted_id, deleted_secret) = create(&server, &["to-delete"]);

    assert_eq!(
        root(&server, &["token", "revoke", "to-revoke"]).ok().stdout,
        "Revoked token \"to-revoke\".\n"
    );
    let listed = root(&server, &["token", "list", "--json", "--status", "revoked"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!((listed[0]["id"].as_u64(), listed[0]["status"].as_str()), (Some(revoked_id), Some("revoked")));
    assert!(listed[0]["revoked_at_us"].is_u64(), "{listed}");
    assert!(listed[0]["revoked_at"].is_string(), "{listed}");
    let table = root(&server, &["token", "list"]).ok();
    let row = table.stdout.lines().find(|line| line.contains("to-revoke")).unwrap();
    assert!(row.contains("revoked"), "{table:?}");
    let refused = with_token(&server, &revoked_secret, &["token", "list"]).exit(5);
    assert!(refused.stderr.contains("error 20003 PersonalAccessTokenRevoked"), "{refused:?}");

    let json = root(&server, &["token", "delete", &deleted_id.to_string(), "--json"]).ok().json();
    assert_eq!(json, serde_json::json!({"action": "delete", "id": deleted_id}));
    root(&server, &["token", "show", "to-delete"]).exit(1);
    let all = root(&server, &["token", "list", "--json"]).ok().json();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    with_token(&server, &deleted_secret, &["token", "list"]).exit(5);
}

#[test]
fn revoke_all_and_delete_all_need_yes() {
    let (_home, server) = start();
    for name in ["one", "two", "three"] {
        create(&server, &[name]);
    }
    let refused = root(&server, &["token", "revoke-all"]).exit(2);
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    root(&server, &["token", "delete-all"]).exit(2);
    assert_eq!(
        root(&server, &["token", "list", "--json", "--status", "active"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    assert_eq!(root(&server, &["token", "revoke-all", "--yes"]).ok().stdout, "Revoked 3 tokens.\n");
    assert_eq!(
        root(&server, &["token", "list", "--json", "--status", "active"]).ok().json(),
        serde_json::json!([])
    );
    assert_eq!(
        root(&server, &["token", "list", "--json", "--status", "revoked"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let json = root(&server, &["token", "delete-all", "--yes", "--json"]).ok().json();
    assert_eq!(json, serde_json::json!({"action": "delete_all", "count": 3}));
    assert_eq!(root(&server, &["token", "list", "--json"]).ok().json(), serde_json::json!([]));
    assert_eq!(root(&server, &["token", "list"]).ok().stdout.lines().count(), 1, "only the header");
}

#[test]
fn authorize_exits_0_when_allowed_and_3_when_denied() {
    let (_home, server) = start();
    let (id, secret) =
        create(&server, &["broker-client", "--scope", "stream:orders:*", "--network", "10.0.0.0/8"]);

    let allowed = root(
        &server,
        &["authorize", &secret, "--scope", "stream:orders:write", "--address", "10.1.2.3:5000"],
    )
    .ok();
    assert!(allowed.stdout.starts_with("allowed\n"), "{allowed:?}");
    assert!(allowed.stdout.contains("user:     iggy (id 0)\n"), "{allowed:?}");
    assert!(allowed.stdout.contains(&format!("token id: {id}\n")), "{allowed:?}");

    let denied =
        root(&server, &["authorize", &secret, "--scope", "stream:payments:write", "--address", "10.1.2.3"])
            .exit(3);
    assert!(denied.stdout.starts_with("denied (scope): "), "{denied:?}");
    let json = root(
        &server,
        &["authorize", &secret, "--scope", "stream:orders:read", "--address", "192.0.2.1", "--json"],
    )
    .exit(3)
    .json();
    assert_eq!((json["allowed"].as_bool(), json["decision"].as_str()), (Some(false), Some("network")));
    assert_eq!(json["token_id"], id);
    let json = root(&server, &["authorize", "lk_no_such_token", "--json"]).exit(3).json();
    assert_eq!(json["decision"], "unknown");
    assert_eq!(json["username"], Value::Null);

    // `-` reads the token from standard input, keeping it out of the process list.
    let mut command = latchkey(server.address);
    command.env("LATCHKEY_USERNAME", "iggy").env("LATCHKEY_PASSWORD", "iggy");
    let mut child = command
        .args(["authorize", "-", "--scope", "stream:orders:write", "--address", "10.9.9.9", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{secret}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(serde_json::from_slice::<Value>(&output.stdout).unwrap()["allowed"], true);

    // A user without the authorize permission is refused by the server: exit 1, not 3.
    let (_, plain) = create(&server, &["no-authorize", "--scope", "tokens:read"]);
    let refused = with_token(&server, &plain, &["authorize", &secret]).exit(1);
    assert!(refused.stderr.contains("error 20005 InsufficientScope"), "{refused:?}");
}

#[test]
fn a_server_refusal_exits_1_with_code_name_and_message() {
    let (_home, server) = start();
    create(&server, &["twice"]);
    let refused = root(&server, &["token", "create", "twice"]).exit(1);
    assert_eq!(
        refused.stderr,
        "latchkey: error 51 PersonalAccessTokenAlreadyExists: personal access token already exists\n"
    );
    assert_eq!(refused.stdout, "");
    let refused = root(&server, &["token", "create", "bad-scope", "--scope", "nonsense"]).exit(1);
    assert!(refused.stderr.contains("error 20007 InvalidScope"), "{refused:?}");
    let refused = root(&server, &["token", "create", "bad-network", "--network", "10.0.0.0/99"]).exit(1);
    assert!(refused.stderr.contains("error 20008 InvalidNetwork"), "{refused:?}");
}

#[test]
fn a_bad_password_exits_5_without_echoing_it() {
    let (_home, server) = start();
    let command = latchkey(server.address);
    let refused = run(command, &["me", "-u", "iggy", "--password", "not-the-password"]).exit(5);
    assert_eq!(refused.stderr, "latchkey: login failed: error 42 InvalidCredentials: invalid credentials\n");
    assert!(!refused.output().contains("not-the-password"));
    let mut command = latchkey(server.address);
    command.env("LATCHKEY_USERNAME", "nobody").env("LATCHKEY_PASSWORD", "wrong");
    run(command, &["token", "list"]).exit(5);
    // A password too short to be anyone's is refused before any lookup (44).
    let command = latchkey(server.address);
    let refused = run(command, &["me", "-u", "iggy", "--password", "x"]).exit(5);
    assert!(refused.stderr.contains("error 44 InvalidPassword"), "{refused:?}");
    with_token(&server, "lk_not_a_real_token", &["me"]).exit(5);
}

#[test]
fn no_server_listening_exits_4() {
    // A port that was free a moment ago and has no listener now.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ping = run(latchkey(address), &["ping"]).exit(4);
    assert!(ping.stderr.starts_with(&format!("latchkey: {address}: connection failed: ")), "{ping:?}");
    let mut command = latchkey(address);
    command.env("LATCHKEY_USERNAME", "iggy").env("LATCHKEY_PASSWORD", "iggy");
    run(command, &["token", "list"]).exit(4);
    run(latchkey(address), &["me", "--token", "lk_x"]).exit(4);
}

#[test]
fn configuration_errors_exit_2_before_connecting() {
    // Nothing listens here; a usage error must be found without trying.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let no_credentials = run(latchkey(address), &["me"]).exit(2);
    assert!(no_credentials.stderr.contains("no credentials"), "{no_credentials:?}");
    let mut command = latchkey(address);
    command.env("LATCHKEY_USERNAME", "iggy");
    let no_terminal = run(command, &["me"]).exit(2);
    assert!(no_terminal.stderr.contains("standard input is not a terminal"), "{no_terminal:?}");
    // Usage is checked before credentials: no prompt for a command that cannot run.
    let mut command = latchkey(address);
    command.env("LATCHKEY_USERNAME", "iggy");
    let without_yes = run(command, &["token", "delete-all"]).exit(2);
    assert!(without_yes.stderr.contains("add --yes"), "{without_yes:?}");
    let mut command = latchkey(address);
    command.env("LATCHKEY_USERNAME", "iggy").env("LATCHKEY_PASSWORD", "iggy");
    let bad_expiry = run(command, &["token", "create", "x", "--expires", "soon"]).exit(2);
    assert!(bad_expiry.stderr.contains("--expires"), "{bad_expiry:?}");
    run(latchkey(address), &["token", "create", "x", "--token", "lk_x", "--expires", "0s"]).exit(2);
    run(latchkey(address), &["token"]).exit(2);
    run(latchkey(address), &["no-such-command"]).exit(2);
    let help = run(latchkey(address), &["--help"]).ok();
    assert!(help.stdout.contains("Exit codes:") && help.stdout.contains("LATCHKEY_TOKEN"), "{help:?}");
}

#[test]
fn list_expiring_within_shows_only_active_tokens_about_to_expire() {
    let (_home, server) = start();
    create(&server, &["soon", "--expires", "2h"]);
    create(&server, &["later", "--expires", "30d"]);
    create(&server, &["never", "--expires", "never"]);
    create(&server, &["revoked-soon", "--expires", "1h"]);
    root(&server, &["token", "revoke", "--name", "revoked-soon"]).ok();
    let names = |within: &str| {
        let listed = root(&server, &["token", "list", "--json", "--expiring-within", within]).ok().json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|token| token["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("1d"), ["soon"]);
    assert_eq!(names("60d"), ["soon", "later"]);
    let bad = root(&server, &["token", "list", "--expiring-within", "0s"]).exit(2);
    assert!(bad.stderr.contains("longer than zero"), "{bad:?}");
}
