//! The HTTP side end to end, over real HTTP to the real binary: probes, the
//! REST API (every route, status and error body), forward auth and
//! introspection, the limits, and that no secret reaches a log or a URL.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestUser, unissued_token, users_config};
use latchkey_sdk::Client;
use latchkey_tests::http::{HttpConnection, Response, basic, bearer, request};
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use serde_json::{Value, json};

const ROOT: (&str, &str) = ("iggy", "iggy");

fn root_auth() -> String {
    basic(ROOT.0, ROOT.1)
}

fn http(server: &TestServer) -> SocketAddr {
    server.http_address.expect("the server logged its HTTP address")
}

fn call(server: &TestServer, method: &str, path: &str, auth: &str, body: Option<Value>) -> Response {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth)];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(http(server), method, path, &headers, body.as_bytes())
}

/// Asserts `response` is an error body with `status` and protocol `code`.
fn assert_error(response: &Response, status: u16, code: u64, name: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["name"], name, "{body}");
    assert!(body["message"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
}

/// Creates a token as root over REST; returns (id, secret).
fn create(server: &TestServer, body: Value) -> (u64, String) {
    let response = call(server, "POST", "/v1/tokens", &root_auth(), Some(body));
    assert_eq!(response.status, 201, "{}", response.text());
    let created = response.json();
    let id = created["id"].as_u64().unwrap();
    assert_eq!(response.header("location"), Some(format!("/v1/tokens/{id}").as_str()));
    (id, created["token"].as_str().unwrap().to_owned())
}

fn start() -> (DataHome, TestServer) {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    (home, server)
}

#[test]
fn probes_answer_and_the_openapi_document_is_served() {
    let (_home, server) = start();
    let health = request(http(&server), "GET", "/healthz", &[], b"");
    assert_eq!((health.status, health.json()["status"].clone()), (200, json!("ok")));
    let ready = request(http(&server), "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(ready.json()["tcp_address"], server.address.to_string());
    let document = request(http(&server), "GET", "/v1/openapi.json", &[], b"");
    assert_eq!(document.status, 200);
    assert_eq!(document.json()["openapi"], "3.0.3");
    assert!(document.json()["paths"]["/v1/tokens/{id}/rotate"]["post"].is_object());
    let metrics = request(http(&server), "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(metrics.text().contains("latchkey_build_info{"), "{}", metrics.text());
}

#[test]
fn unknown_routes_methods_and_ids() {
    let (_home, server) = start();
    let missing = request(http(&server), "GET", "/v2/nothing", &[], b"");
    assert_error(&missing, 404, 3, "InvalidCommand");
    let wrong = request(http(&server), "PUT", "/v1/tokens", &[], b"");
    assert_error(&wrong, 405, 3, "InvalidCommand");
    assert_eq!(wrong.header("allow"), Some("GET, POST, DELETE"));
    let bad_id = call(&server, "GET", "/v1/tokens/twelve", &root_auth(), None);
    assert_error(&bad_id, 400, 4, "InvalidFormat");
}

#[test]
fn every_token_route_with_a_password_login() {
    let (_home, server) = start();
    let auth = root_auth();
    let me = call(&server, "GET", "/v1/me", &auth, None);
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["user_id"], 0);
    assert_eq!(me.json()["username"], "iggy");
    assert_eq!(me.json()["authenticated_with"], "password");

    let (id, secret) = create(
        &server,
        json!({"name": "ci-token", "description": "for CI", "expires_in": "30d", "scopes": ["stream:orders:read"]}),
    );
    common::assert_token_shape(&secret);
    let got = call(&server, "GET", &format!("/v1/tokens/{id}"), &auth, None);
    assert_eq!(got.status, 200);
    let token = got.json();
    assert_eq!(token["name"], "ci-token");
    assert_eq!(token["description"], "for CI");
    assert_eq!(token["status"], "active");
    assert_eq!(token["active"], true);
    assert_eq!(token["scopes"], json!(["stream:orders:read"]));
    assert!(token["expires_at"].is_string());
    assert!(token.get("token").is_none(), "a listed token never carries its secret");

    // The same name again: the binary protocol's 51, as 409.
    let again = call(&server, "POST", "/v1/tokens", &auth, Some(json!({"name": "ci-token"})));
    assert_error(&again, 409, 51, "PersonalAccessTokenAlreadyExists");

    let patched = call(&server, "PATCH", &format!("/v1/tokens/{id}"), &auth, Some(json!({"name": "ci-2"})));
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["name"], "ci-2");

    let (second, _) = create(&server, json!({"name": "deploy", "expires_at": "2099-01-01T00:00:00Z"}));
    let page = call(&server, "GET", "/v1/tokens?limit=1", &auth, None);
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(page.json()["next_after"], id);
    let rest = call(&server, "GET", &format!("/v1/tokens?after={id}"), &auth, None);
    assert_eq!(rest.json()["tokens"][0]["id"], second);
    assert!(rest.json()["next_after"].is_null());

    let rotated = call(&server, "POST", &format!("/v1/tokens/{id}/rotate"), &auth, None);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_secret = rotated.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated.json()["id"], id);
    assert_eq!(rotated.json()["name"], "ci-2");

    let revoked = call(&server, "POST", &format!("/v1/tokens/{second}/revoke"), &auth, None);
    assert_eq!(revoked.status, 204);
    let revoked = call(&server, "GET", &format!("/v1/tokens/{second}"), &auth, None);
    assert_eq!(revoked.json()["status"], "revoked");
    assert!(revoked.json()["revoked_at"].is_string());
    let active = call(&server, "GET", "/v1/tokens?status=active", &auth, None);
    let ids: Vec<u64> =
        active.json()["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [id]);

    let deleted = call(&server, "DELETE", &format!("/v1/tokens/{second}"), &auth, None);
    assert_eq!(deleted.status, 204);
    let gone = call(&server, "GET", &format!("/v1/tokens/{second}"), &auth, None);
    assert_error(&gone, 404, 20, "ResourceNotFound");

    let revoked_all = call(&server, "POST", "/v1/tokens/revoke-all", &auth, None);
    assert_eq!(revoked_all.json()["count"], 1);
    create(&server, json!({"name": "third"}));
    let deleted_all = call(&server, "DELETE", "/v1/tokens", &auth, None);
    assert_eq!((deleted_all.status, deleted_all.json()["count"].clone()), (200, json!(2)));
}

#[tokio::test]
async fn a_token_made_over_http_logs_in_over_tcp_and_the_other_way_round() {
    let (_home, server) = start();
    let (_, secret) = create(&server, json!({"name": "http-made"}));
    let mut client = Client::connect(server.address).await.unwrap();
    assert_eq!(client.login_with_personal_access_token(&secret).await.unwrap(), 0);
    let made_over_tcp =
        client.create_personal_access_token("tcp-made", latchkey_sdk::Expiry::Never).await.unwrap();
    let me = call(&server, "GET", "/v1/me", &bearer(&made_over_tcp), None);
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["authenticated_with"], "token");
}

#[test]
fn credentials_are_refused_with_401_and_a_challenge() {
    let (_home, server) = start();
    let none = request(http(&server), "GET", "/v1/tokens", &[], b"");
    assert_error(&none, 401, 40, "Unauthenticated");
    assert!(none.header("www-authenticate").unwrap().contains("Bearer"));
    let wrong = call(&server, "GET", "/v1/tokens", &basic("iggy", "not-the-password"), None);
    assert_error(&wrong, 401, 42, "InvalidCredentials");
    // An unknown token is 20 on TCP; over HTTP every refused credential is 401.
    let unknown = call(&server, "GET", "/v1/tokens", &bearer(&unissued_token()), None);
    assert_eq!(unknown.status, 401);
    let garbage = call(&server, "GET", "/v1/tokens", "Basic !!!", None);
    assert_error(&garbage, 401, 40, "Unauthenticated");
    let scheme = call(&server, "GET", "/v1/tokens", "Digest abc", None);
    assert_error(&scheme, 401, 40, "Unauthenticated");
}

#[test]
fn bodies_are_checked_before_anything_is_made() {
    let (_home, server) = start();
    let auth = root_auth();
    let address = http(&server);
    let broken = request(address, "POST", "/v1/tokens", &[("Authorization", &auth)], b"{\"name\": ");
    assert_error(&broken, 400, 4, "InvalidFormat");
    let unknown_field =
        call(&server, "POST", "/v1/tokens", &auth, Some(json!({"name": "xyz", "colour": "red"})));
    assert_error(&unknown_field, 400, 4, "InvalidFormat");
    assert!(unknown_field.json()["message"].as_str().unwrap().contains("colour"));
    let missing = call(&server, "POST", "/v1/tokens", &auth, Some(json!({"description": "no name"})));
    assert_error(&missing, 400, 4, "InvalidFormat");
    let both = call(
        &server,
        "POST",
        "/v1/tokens",
        &auth,
        Some(json!({"name": "xyz", "expires_in": "1d", "expires_at": "2099-01-01T00:00:00Z"})),
    );
    assert_error(&both, 422, 56, "InvalidPersonalAccessTokenExpiry");
    let past = call(
        &server,
        "POST",
        "/v1/tokens",
        &auth,
        Some(json!({"name": "xyz", "expires_at": "2001-01-01T00:00:00Z"})),
    );
    assert_error(&past, 422, 56, "InvalidPersonalAccessTokenExpiry");
    let scope =
        call(&server, "POST", "/v1/tokens", &auth, Some(json!({"name": "xyz", "scopes": ["not a scope"]})));
    assert_error(&scope, 422, 20007, "InvalidScope");
    let network =
        call(&server, "POST", "/v1/tokens", &auth, Some(json!({"name": "xyz", "networks": ["10.0.0.0/99"]})));
    assert_error(&network, 422, 20008, "InvalidNetwork");
    let name = call(&server, "POST", "/v1/tokens", &auth, Some(json!({"name": ""})));
    assert_error(&name, 422, 50, "InvalidPersonalAccessTokenName");
    // Over [http] max_body_bytes (64 KiB): 413, declared or not.
    let huge = vec![b' '; 70 * 1024];
    let declared = request(address, "POST", "/v1/tokens", &[("Authorization", &auth)], &huge);
    assert_error(&declared, 413, 4, "InvalidFormat");
    let listed = call(&server, "GET", "/v1/tokens", &auth, None);
    assert_eq!(listed.json()["tokens"], json!([]), "nothing was made by a refused request");
}

/// A body that arrives in pieces (chunked, with pauses) is read whole; one
/// past the limit without a declared length is refused 413; one that stops
/// arriving is answered 408 after `[http] request_timeout`.
#[test]
fn bodies_in_pieces_past_the_limit_or_stalled() {
    let home = DataHome::new();
    let server =
        TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_HTTP_REQUEST_TIMEOUT", "1s"));
    let head = |extra: &str| {
        format!(
            "POST /v1/tokens HTTP/1.1\r\nHost: latchkey\r\nAuthorization: {}\r\nContent-Type: application/json\r\n{extra}\r\n",
            root_auth()
        )
    };
    let mut connection = HttpConnection::open(http(&server));
    connection.write_part(head("Transfer-Encoding: chunked\r\n").as_bytes()).unwrap();
    for piece in [r#"{"name":"#, r#""in-pie"#, r#"ces"}"#] {
        std::thread::sleep(Duration::from_millis(50));
        connection.write_part(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes()).unwrap();
    }
    connection.write_part(b"0\r\n\r\n").unwrap();
    let made = connection.response().expect("an answer");
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(made.json()["name"], "in-pieces");

    let mut connection = HttpConnection::open(http(&server));
    connection.write_part(head("Transfer-Encoding: chunked\r\n").as_bytes()).unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    // 64 KiB in four pieces, then the byte past the limit with the body's
    // end in one write, so the server has read everything when it answers.
    for _ in 0..4 {
        connection.write_part(chunk.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    connection.write_part(b"1\r\nx\r\n0\r\n\r\n").unwrap();
    let refused = connection.response().expect("an answer to a body past the limit");
    assert_error(&refused, 413, 4, "InvalidFormat");

    let mut connection = HttpConnection::open(http(&server));
    connection.write_part(format!("{}{}", head("Content-Length: 40\r\n"), r#"{"name":"#).as_bytes()).unwrap();
    let stalled = connection.response().expect("an answer to a stalled body");
    assert_error(&stalled, 408, 4, "InvalidFormat");
    let listed = call(&server, "GET", "/v1/tokens", &root_auth(), None).json();
    let names: Vec<&str> =
        listed["tokens"].as_array().unwrap().iter().filter_map(|token| token["name"].as_str()).collect();
    assert_eq!(names, ["in-pieces"], "nothing was made by a refused request");
}

#[test]
fn scopes_and_networks_are_edited_with_patch_access() {
    let (_home, server) = start();
    let auth = root_auth();
    let (id, secret) = create(
        &server,
        json!({"name": "edited", "description": "kept", "scopes": ["tokens:read", "stream:orders:write"],
               "networks": ["10.0.0.0/8", "2001:db8::/32"]}),
    );
    let path = format!("/v1/tokens/{id}/access");
    let edit = |body: Value| call(&server, "PATCH", &path, &auth, Some(body));

    // Clears, then removes, then adds, scopes before networks: one change.
    let edited = edit(json!({"remove_scopes": ["tokens:read"], "add_scopes": ["stream:payments:read"],
                             "clear_networks": true, "add_networks": ["127.0.0.1"]}));
    assert_eq!(edited.status, 200, "{}", edited.text());
    let token = edited.json();
    assert_eq!(token["scopes"], json!(["stream:orders:write", "stream:payments:read"]));
    assert_eq!(token["networks"], json!(["127.0.0.1/32"]));
    assert_eq!((token["name"].clone(), token["description"].clone()), (json!("edited"), json!("kept")));
    let replaced =
        edit(json!({"clear_scopes": true, "add_scopes": ["me:read"], "remove_networks": ["127.0.0.1/32"]}));
    assert_eq!(replaced.json()["scopes"], json!(["me:read"]));
    assert_eq!(replaced.json()["networks"], json!([]));
    let full = edit(json!({"clear_scopes": true}));
    assert_eq!(full.json()["scopes"], json!([]), "no scopes: full access");

    // The binary protocol's codes, as the other routes give them.
    assert_error(&edit(json!({})), 400, 4, "InvalidFormat");
    assert_error(&edit(json!({"add_scopes": "me:read"})), 400, 4, "InvalidFormat");
    assert_error(&edit(json!({"colour": "red"})), 400, 4, "InvalidFormat");
    let too_many: Vec<String> = (0..256).map(|n| format!("s:{n}:r")).collect();
    assert_error(&edit(json!({"add_scopes": too_many})), 400, 4, "InvalidFormat");
    assert_error(&edit(json!({"add_scopes": ["not a scope"]})), 422, 20007, "InvalidScope");
    assert_error(&edit(json!({"add_scopes": [""]})), 422, 20007, "InvalidScope");
    let thirty_three: Vec<String> = (0..33).map(|n| format!("s:{n}:r")).collect();
    assert_error(&edit(json!({"add_scopes": thirty_three})), 422, 20007, "InvalidScope");
    assert_error(&edit(json!({"add_networks": ["10.0.0.1/8"]})), 422, 20008, "InvalidNetwork");
    let missing = call(&server, "PATCH", "/v1/tokens/999/access", &auth, Some(json!({"clear_scopes": true})));
    assert_error(&missing, 404, 20, "ResourceNotFound");
    let wrong = call(&server, "POST", &path, &auth, Some(json!({"clear_scopes": true})));
    assert_error(&wrong, 405, 3, "InvalidCommand");
    assert_eq!(wrong.header("allow"), Some("PATCH"));
    assert_eq!(call(&server, "GET", &format!("/v1/tokens/{id}"), &auth, None).json()["scopes"], json!([]));

    // A token that may read: 200 with the token. Its own token: the edit
    // ends that session, so 204. A scoped session may not widen.
    let (_, writer) =
        create(&server, json!({"name": "writer", "scopes": ["tokens:write", "tokens:read", "me:read"]}));
    let (narrow, _) = create(&server, json!({"name": "narrow", "scopes": ["me:read"]}));
    let narrow_path = format!("/v1/tokens/{narrow}/access");
    let by_writer = |body: Value| call(&server, "PATCH", &narrow_path, &bearer(&writer), Some(body));
    assert_error(&by_writer(json!({"add_scopes": ["stream:x:read"]})), 403, 20005, "InsufficientScope");
    assert_error(&by_writer(json!({"clear_scopes": true})), 403, 20005, "InsufficientScope");
    let added = by_writer(json!({"add_scopes": ["tokens:read"]}));
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(added.json()["scopes"], json!(["me:read", "tokens:read"]));
    let own = call(&server, "PATCH", &path, &bearer(&secret), Some(json!({"add_scopes": ["me:read"]})));
    assert_eq!(own.status, 204, "{}", own.text());
    let listed = call(&server, "GET", &format!("/v1/tokens/{id}"), &auth, None).json();
    assert_eq!(listed["scopes"], json!(["me:read"]));
    let document = request(http(&server), "GET", "/v1/openapi.json", &[], b"");
    assert!(document.json()["paths"]["/v1/tokens/{id}/access"]["patch"].is_object());
}

#[test]
fn rotate_with_reactivate_brings_a_revoked_token_back() {
    let (_home, server) = start();
    let auth = root_auth();
    let (id, secret) =
        create(&server, json!({"name": "comeback", "scopes": ["me:read"], "expires_in": "1h"}));
    assert_eq!(call(&server, "POST", &format!("/v1/tokens/{id}/revoke"), &auth, None).status, 204);
    let path = format!("/v1/tokens/{id}/rotate");
    // Refused for the token's state: 409 (not 401, which would say the
    // caller's own credentials failed).
    let refused = call(&server, "POST", &path, &auth, None);
    assert_error(&refused, 409, 20003, "PersonalAccessTokenRevoked");
    assert!(refused.json()["message"].as_str().unwrap().contains("reactivate"), "{}", refused.text());
    let refused = call(&server, "POST", &path, &auth, Some(json!({"reactivate": "yes"})));
    assert_error(&refused, 400, 4, "InvalidFormat");

    let back = call(&server, "POST", &path, &auth, Some(json!({"reactivate": true, "expires_in": "2h"})));
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!((back.json()["id"].clone(), back.json()["name"].clone()), (json!(id), json!("comeback")));
    let new_secret = back.json()["token"].as_str().unwrap().to_owned();
    let token = call(&server, "GET", &format!("/v1/tokens/{id}"), &auth, None).json();
    assert_eq!((token["status"].clone(), token["revoked_at"].clone()), (json!("active"), Value::Null));
    assert_eq!(token["scopes"], json!(["me:read"]));
    assert_eq!(call(&server, "GET", "/v1/me", &bearer(&new_secret), None).status, 200);
    assert_eq!(call(&server, "GET", "/v1/me", &bearer(&secret), None).status, 401);

    // Expired: its expiry cannot be kept (422), a new lifetime brings it back.
    let (short, _) = create(&server, json!({"name": "short", "expires_in": "1ms"}));
    std::thread::sleep(Duration::from_millis(5));
    let short_path = format!("/v1/tokens/{short}/rotate");
    let kept = call(&server, "POST", &short_path, &auth, Some(json!({"reactivate": true})));
    assert_error(&kept, 422, 54, "PersonalAccessTokenExpired");
    let renewed = call(&server, "POST", &short_path, &auth, Some(json!({"expires_in": "1d"})));
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    assert_eq!(call(&server, "GET", &format!("/v1/tokens/{short}"), &auth, None).json()["status"], "active");
}

#[test]
fn a_caller_may_revoke_or_rotate_the_token_it_authenticated_with() {
    let (_home, server) = start();
    let (id, secret) = create(&server, json!({"name": "self-service"}));
    let rotated = call(&server, "POST", &format!("/v1/tokens/{id}/rotate"), &bearer(&secret), None);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.json()["name"], "self-service");
    let new_secret = rotated.json()["token"].as_str().unwrap().to_owned();
    let revoked = call(&server, "POST", &format!("/v1/tokens/{id}/revoke"), &bearer(&new_secret), None);
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    let after = call(&server, "GET", "/v1/me", &bearer(&new_secret), None);
    assert_eq!(after.status, 401);
}

#[test]
fn a_scoped_token_session_is_held_to_its_scopes() {
    let (_home, server) = start();
    let (_, reader) = create(&server, json!({"name": "reader", "scopes": ["tokens:read"]}));
    let listed = call(&server, "GET", "/v1/tokens", &bearer(&reader), None);
    assert_eq!(listed.status, 200);
    let made = call(&server, "POST", "/v1/tokens", &bearer(&reader), Some(json!({"name": "escalate"})));
    assert_error(&made, 403, 20005, "InsufficientScope");
    let me = call(&server, "GET", "/v1/me", &bearer(&reader), None);
    assert_error(&me, 403, 20005, "InsufficientScope");
}

/// `/v1/auth/check` as a proxy calls it.
fn check(server: &TestServer, token: Option<&str>, extra: &[(&str, &str)], path: &str) -> Response {
    let auth = token.map(bearer);
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    request(http(server), "GET", path, &headers, b"")
}

#[test]
fn forward_auth_allows_and_denies_like_authorize() {
    let (_home, server) = start();
    let (id, secret) =
        create(&server, json!({"name": "svc", "scopes": ["stream:orders:read", "stream:*:write"]}));
    let allowed =
        check(&server, Some(&secret), &[("X-Latchkey-Scope", "stream:orders:read")], "/v1/auth/check");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.header("x-latchkey-user-id"), Some("0"));
    assert_eq!(allowed.header("x-latchkey-username"), Some("iggy"));
    assert_eq!(allowed.header("x-latchkey-token-id"), Some(id.to_string().as_str()));
    assert_eq!(allowed.header("x-latchkey-scopes"), Some("stream:orders:read stream:*:write"));
    // The scope from the query, on any path below the endpoint.
    let by_query =
        check(&server, Some(&secret), &[], "/v1/auth/check/some/upstream?scope=stream:billing:write");
    assert_eq!(by_query.status, 200, "{}", by_query.text());

    let scope =
        check(&server, Some(&secret), &[("X-Latchkey-Scope", "stream:billing:read")], "/v1/auth/check");
    assert_eq!((scope.status, scope.header("x-latchkey-reason")), (403, Some("scope")));
    assert!(scope.header("x-latchkey-user-id").is_none());
    // The proxy's query scope holds whatever header the client adds: an
    // empty one, or one the token has, does not lift it.
    let lifted = check(
        &server,
        Some(&secret),
        &[("X-Latchkey-Scope", "")],
        "/v1/auth/check?scope=stream:billing:read",
    );
    assert_eq!((lifted.status, lifted.header("x-latchkey-reason")), (403, Some("scope")));
    let swapped = check(
        &server,
        Some(&secret),
        &[("X-Latchkey-Scope", "stream:orders:read")],
        "/v1/auth/check?scope=stream:billing:read",
    );
    assert_eq!((swapped.status, swapped.header("x-latchkey-reason")), (403, Some("scope")));
    // Both required, both held: allowed.
    let both = check(
        &server,
        Some(&secret),
        &[("X-Latchkey-Scope", "stream:orders:read")],
        "/v1/auth/check?scope=stream:payments:write",
    );
    assert_eq!(both.status, 200, "{}", both.text());
    let bad_scope = check(&server, Some(&secret), &[("X-Latchkey-Scope", "a b")], "/v1/auth/check");
    assert_eq!((bad_scope.status, bad_scope.header("x-latchkey-reason")), (403, Some("invalid_scope")));
    let missing = check(&server, None, &[], "/v1/auth/check");
    assert_eq!((missing.status, missing.header("x-latchkey-reason")), (401, Some("missing_token")));
    assert!(missing.header("www-authenticate").unwrap().starts_with("Bearer"));
    let unknown = check(&server, Some(&unissued_token()), &[], "/v1/auth/check");
    assert_eq!((unknown.status, unknown.header("x-latchkey-reason")), (401, Some("unknown")));
    let malformed = check(&server, Some("not-a-token"), &[], "/v1/auth/check");
    assert_eq!(malformed.status, 401);

    // Rotated: the old secret is unknown at once.
    let rotated = call(&server, "POST", &format!("/v1/tokens/{id}/rotate"), &root_auth(), None);
    let new_secret = rotated.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(check(&server, Some(&secret), &[], "/v1/auth/check").status, 401);
    assert_eq!(check(&server, Some(&new_secret), &[], "/v1/auth/check").status, 200);
    // Revoked: 401 with the reason.
    call(&server, "POST", &format!("/v1/tokens/{id}/revoke"), &root_auth(), None);
    let revoked = check(&server, Some(&new_secret), &[], "/v1/auth/check");
    assert_eq!((revoked.status, revoked.header("x-latchkey-reason")), (401, Some("revoked")));
    // Never a 429 or 5xx for a deny: every answer above was 200, 401 or 403.
}

#[test]
fn forward_auth_checks_networks_against_the_client_the_trusted_proxy_names() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_HTTP_TRUSTED_PROXIES", "127.0.0.1");
    let server = TestServer::start(&home, &spec);
    let (id, secret) = create(&server, json!({"name": "office", "networks": ["203.0.113.0/24"]}));
    // Straight from loopback, no header: outside the token's network.
    let direct = check(&server, Some(&secret), &[], "/v1/auth/check");
    assert_eq!((direct.status, direct.header("x-latchkey-reason")), (403, Some("network")));
    let inside = check(&server, Some(&secret), &[("X-Forwarded-For", "203.0.113.7")], "/v1/auth/check");
    assert_eq!(inside.status, 200, "{}", inside.text());
    // A client-made-up hop left of the real one is not believed.
    let spoofed =
        check(&server, Some(&secret), &[("X-Forwarded-For", "203.0.113.7, 198.51.100.1")], "/v1/auth/check");
    assert_eq!(spoofed.status, 403);
    let real_ip = check(&server, Some(&secret), &[("X-Real-IP", "203.0.113.9")], "/v1/auth/check");
    assert_eq!(real_ip.status, 200);
    // The allowed checks are the token's last use, from the client's address
    // (handed over when the check's connection closed).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let token = call(&server, "GET", &format!("/v1/tokens/{id}"), &root_auth(), None).json();
        if token["last_used_address"].as_str().is_some_and(|address| address.starts_with("203.0.113.")) {
            assert!(token["last_used_at"].is_string());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no last use recorded: {token}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn forward_auth_throttles_guessing_without_a_429() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "3")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "1");
    let server = TestServer::start(&home, &spec);
    let (_, secret) = create(&server, json!({"name": "real"}));
    let reasons: Vec<(u16, String)> = (0..6)
        .map(|_| {
            let answer = check(&server, Some(&unissued_token()), &[], "/v1/auth/check");
            (answer.status, answer.header("x-latchkey-reason").unwrap_or("").to_owned())
        })
        .collect();
    assert!(reasons.iter().all(|(status, _)| *status == 401), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|(_, reason)| reason == "unknown").count(), 3, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|(_, reason)| reason == "throttled").count(), 3, "{reasons:?}");
    // The throttled address is refused even with a real token: it is told so.
    let real = check(&server, Some(&secret), &[], "/v1/auth/check");
    assert_eq!((real.status, real.header("x-latchkey-reason")), (401, Some("throttled")));
}

#[test]
fn introspection_needs_the_authorize_permission() {
    let home = DataHome::new();
    let users =
        users_config(&[TestUser { id: 5, username: "plain", password: "plain-password", active: true }]);
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&users));
    let (id, secret) =
        create(&server, json!({"name": "svc", "scopes": ["stream:orders:read"], "expires_in": "1d"}));
    let form = format!("token={secret}");
    let headers = |auth: &str| {
        [("Authorization", auth.to_owned()), ("Content-Type", "application/x-www-form-urlencoded".to_owned())]
    };
    let introspect = |auth: &str, body: &str| {
        let headers = headers(auth);
        let headers: Vec<(&str, &str)> =
            headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        request(http(&server), "POST", "/v1/introspect", &headers, body.as_bytes())
    };
    let denied = introspect(&basic("plain", "plain-password"), &form);
    assert_error(&denied, 403, 20011, "AuthorizeNotPermitted");
    let active = introspect(&root_auth(), &form);
    assert_eq!(active.status, 200, "{}", active.text());
    let body = active.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], "0");
    assert_eq!(body["username"], "iggy");
    assert_eq!(body["scope"], "stream:orders:read");
    assert_eq!(body["jti"], id.to_string());
    assert_eq!(body["token_type"], "Bearer");
    let (exp, iat) = (body["exp"].as_u64().unwrap(), body["iat"].as_u64().unwrap());
    assert!((86_390..=86_410).contains(&(exp - iat)), "exp {exp} iat {iat}");
    let unknown = introspect(&root_auth(), &format!("token={}", unissued_token()));
    assert_eq!(unknown.json(), json!({"active": false}));
    let no_field = introspect(&root_auth(), "other=1");
    assert_error(&no_field, 400, 4, "InvalidFormat");
}

#[test]
fn no_secret_reaches_the_logs() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_LOG", "debug,audit=debug");
    let server = TestServer::start(&home, &spec);
    let (id, secret) = create(&server, json!({"name": "quiet"}));
    check(&server, Some(&secret), &[], "/v1/auth/check");
    call(&server, "GET", "/v1/me", &bearer(&secret), None);
    let rotated = call(&server, "POST", &format!("/v1/tokens/{id}/rotate"), &root_auth(), None);
    let rotated = rotated.json()["token"].as_str().unwrap().to_owned();
    call(&server, "GET", "/v1/me", &basic("iggy", "a-wrong-password"), None);
    let logs = server.logs() + &server.stderr();
    for secret in [secret.as_str(), rotated.as_str(), "a-wrong-password", "aWdneTp"] {
        assert!(!logs.contains(secret), "{secret:?} in the logs");
    }
    assert!(logs.contains("event=\"authorize\"") || logs.contains("authorize"), "the check was audited");
}

#[test]
fn limits_431_for_a_large_head_and_closed_idle_connections() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_HTTP_IDLE_TIMEOUT", "300ms");
    let server = TestServer::start(&home, &spec);
    let mut connection = HttpConnection::open(http(&server));
    let big = "x".repeat(20 * 1024);
    let answer =
        connection.raw(format!("GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(answer.map(|answer| answer.status), Some(431));
    // A kept-alive connection idle past idle_timeout is closed by the server.
    let mut idle = HttpConnection::open(http(&server));
    assert_eq!(idle.send("GET", "/healthz", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(idle.raw(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").is_none(), "idle connection still open");
    // A client that never finishes its head is closed too.
    let mut slow = HttpConnection::open(http(&server));
    assert!(slow.raw(b"GET /healthz HTTP/1.1\r\nHost:").is_none());
}

#[test]
fn connections_per_address_are_limited() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_HTTP_MAX_CONNECTIONS_PER_IP", "2");
    let server = TestServer::start(&home, &spec);
    let mut first = HttpConnection::open(http(&server));
    let mut second = HttpConnection::open(http(&server));
    assert_eq!(first.send("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(second.send("GET", "/healthz", &[], b"").status, 200);
    let mut third = HttpConnection::open(http(&server));
    assert!(
        third.raw(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").is_none(),
        "a third connection was served"
    );
    drop(first);
    // The slot comes back once the first connection is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = HttpConnection::open(http(&server));
        if again.raw(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").is_some_and(|answer| answer.status == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_http_side_can_be_turned_off() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_HTTP_ENABLED", "false"));
    assert!(server.http_address.is_none());
    assert!(!server.logs().contains("HTTP listening"));
}

#[test]
fn broker_questions_by_name_record_no_use_only_the_login_does() {
    let (_home, server) = start();
    let (id, secret) = create(&server, json!({"name": "amqp"}));
    let form = |path: &str, body: &str| {
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        request(http(&server), "POST", path, &headers, body.as_bytes())
    };
    // Anyone can ask about a name: allowed, but no use is recorded.
    let vhost = form("/v1/rabbitmq/vhost", "username=iggy%2Famqp&vhost=%2F&ip=198.51.100.7");
    assert_eq!(vhost.text(), "allow");
    std::thread::sleep(Duration::from_millis(200));
    let token = call(&server, "GET", &format!("/v1/tokens/{id}"), &root_auth(), None).json();
    assert!(token["last_used_at"].is_null(), "a question by name forged a use: {token}");
    // The login, which proves the secret, is a use.
    let login = form("/v1/rabbitmq/user", &format!("username=iggy%2Famqp&password={secret}"));
    assert_eq!(login.text(), "allow");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let token = call(&server, "GET", &format!("/v1/tokens/{id}"), &root_auth(), None).json();
        if token["last_used_at"].is_string() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the broker login recorded no use: {token}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rabbitmq_questions_by_get_and_post_field_by_field() {
    let (_home, server) = start();
    let granted = json!(["vhost:prod:access", "exchange:orders:write", "topic:events:read"]);
    // Another token with the same scopes first: the audit check below can
    // tell which of the two a question was taken to be about.
    create(&server, json!({"name": "amqp-other", "scopes": granted}));
    let (id, secret) = create(&server, json!({"name": "amqp", "scopes": granted}));
    let post = |question: &str, body: &str| {
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        request(http(&server), "POST", &format!("/v1/rabbitmq/{question}"), &headers, body.as_bytes())
    };
    let get = |question: &str, query: &str| {
        request(http(&server), "GET", &format!("/v1/rabbitmq/{question}?{query}"), &[], b"")
    };
    let answer = |response: Response| {
        // Always a 200 in plain text that no cache keeps, without the
        // headers only a browser reads.
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
        assert_eq!(response.header("content-security-policy"), None);
        assert_eq!(response.header("x-frame-options"), None);
        response.text()
    };
    let user = format!("username=iggy%2Famqp&password={secret}");
    assert_eq!(answer(post("user", &user)), "allow");
    assert_eq!(answer(get("user", &user)), "allow");
    // The name unescaped, and `+` in a field that has none.
    assert_eq!(answer(post("user", &format!("username=iggy/amqp&password={secret}"))), "allow");
    assert_eq!(answer(post("user", &format!("username=iggy%2Famqp&password={secret}+"))), "deny");
    assert_eq!(answer(post("user", "username=iggy%2Famqp")), "deny");
    assert_eq!(answer(post("user", &format!("username=iggy%2Fother&password={secret}"))), "deny");

    let vhost = "username=iggy%2Famqp&vhost=prod&ip=127.0.0.1";
    assert_eq!(answer(post("vhost", vhost)), "allow");
    assert_eq!(answer(get("vhost", vhost)), "allow");
    assert_eq!(answer(post("vhost", "username=iggy%2Famqp&vhost=prod")), "deny", "no ip");
    assert_eq!(answer(post("vhost", "username=iggy%2Famqp&vhost=prod&ip=a.b")), "deny", "bad ip");
    assert_eq!(
        answer(post("vhost", "username=iggy%2Famqp&vhost=%2F&ip=127.0.0.1")),
        "deny",
        "/ needs vhost:*"
    );
    assert_eq!(answer(post("vhost", "username=iggy%2Famqp&vhost=%FF&ip=127.0.0.1")), "deny", "not UTF-8");

    let resource = |rest: &str| format!("username=iggy%2Famqp&vhost=prod&{rest}");
    assert_eq!(
        answer(post("resource", &resource("resource=exchange&name=orders&permission=write"))),
        "allow"
    );
    assert_eq!(answer(get("resource", &resource("resource=exchange&name=orders&permission=write"))), "allow");
    assert_eq!(answer(post("resource", &resource("resource=exchange&name=orders&permission=read"))), "deny");
    // The refusal's audit event names the token the username names.
    let refused = |line: &&str| {
        line.contains("via=\"broker\"")
            && line.contains("decision=\"scope\"")
            && line.contains("scope=exchange:orders:read")
            && line.contains(&format!("token_id={id} "))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.logs().lines().any(|line| refused(&line)) {
        assert!(std::time::Instant::now() < deadline, "no audit event for the refusal: {}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answer(post("resource", &resource("resource=queue&name=orders&permission=write"))), "deny");
    assert_eq!(
        answer(post("resource", &resource("resource=exchange&name=orders&permission=delete"))),
        "deny"
    );
    assert_eq!(answer(post("resource", &resource("resource=stream&name=orders&permission=write"))), "deny");
    assert_eq!(answer(post("resource", &resource("resource=exchange&permission=write"))), "deny", "no name");
    // A field given twice counts once, with its last value.
    let twice = |names: &str| resource(&format!("resource=exchange&{names}&permission=write"));
    assert_eq!(answer(post("resource", &twice("name=billing&name=orders"))), "allow");
    assert_eq!(answer(post("resource", &twice("name=orders&name=billing"))), "deny");
    assert_eq!(answer(post("resource", &twice("name=ord%65rs"))), "allow", "an escaped letter");

    // The topic question is about a topic whatever `resource` says.
    let topic = |rest: &str| format!("username=iggy%2Famqp&vhost=prod&{rest}&routing_key=a.b");
    assert_eq!(answer(post("topic", &topic("resource=topic&name=events&permission=read"))), "allow");
    assert_eq!(answer(post("topic", &topic("resource=exchange&name=events&permission=read"))), "allow");
    assert_eq!(answer(post("topic", &topic("resource=topic&name=events&permission=write"))), "deny");
    assert_eq!(answer(post("topic", &topic("resource=topic&name=orders&permission=write"))), "deny");

    // Asked with a console's headers, still the broker's answer.
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("X-Latchkey-Csrf", "")];
    let consoled = request(http(&server), "POST", "/v1/rabbitmq/vhost", &headers, vhost.as_bytes());
    assert_eq!(answer(consoled), "allow");
    // Only the four questions, by GET or POST.
    assert_eq!(request(http(&server), "POST", "/v1/rabbitmq/user/x", &[], b"").status, 404);
    assert_eq!(request(http(&server), "POST", "/v1/rabbitmq/queue", &[], b"").status, 404);
    let put = request(http(&server), "PUT", "/v1/rabbitmq/user", &[], b"");
    assert_eq!((put.status, put.header("allow")), (405, Some("GET, POST")));
}
