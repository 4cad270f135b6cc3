//! The web console end to end: its HTTP rules over plain HTTP (security
//! headers, the session cookie, CSRF and origin checks, sessions that end
//! with their token), and its pages in a real headless Chromium driven
//! through WebDriver (Debian's `chromium` and `chromium-driver`): sign-ins,
//! create, the secret shown once and used for a binary-protocol login,
//! scopes and networks added and deleted on a token's page, revoke,
//! regenerate (of an active and of a revoked token), delete, delete all,
//! revoke all, the status filter, paging past 1,000 tokens, sign-out.
//!
//! With `LATCHKEY_CONSOLE_SCREENSHOTS=<dir>` the browser test also saves
//! the main pages at 1440 and 375 pixels wide there (docs/console/ holds
//! the committed ones).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use latchkey_sdk::{Client, NewToken};
use latchkey_tests::http::{Response, basic, request};
use latchkey_tests::webdriver::{Browser, find_browser};
use latchkey_tests::{DataHome, ServerSpec, TestServer, skip};
use serde_json::{Value, json};

/// One browser at a time: two cores do not run two Chromiums well.
static BROWSER: Mutex<()> = Mutex::new(());

const ROOT_AUTH: (&str, &str) = ("iggy", "iggy");
/// What the HTTP test client sends as `Host` (tests/src/http.rs).
const SAME_ORIGIN: &str = "http://latchkey";

fn http(server: &TestServer) -> SocketAddr {
    server.http_address.expect("the server logged its HTTP address")
}

fn root() -> String {
    basic(ROOT_AUTH.0, ROOT_AUTH.1)
}

/// A REST call as root with Basic.
fn rest(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let auth = root();
    request(http(server), method, path, &[("Authorization", &auth)], body.as_bytes())
}

/// Creates a token as root; (id, secret).
fn create(server: &TestServer, body: Value) -> (u64, String) {
    let created = rest(server, "POST", "/v1/tokens", Some(body));
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    (created["id"].as_u64().unwrap(), created["token"].as_str().unwrap().to_owned())
}

/// Signs in over plain HTTP as the console does; (cookie value, CSRF token).
fn sign_in(server: &TestServer, body: Value) -> (String, String) {
    let response = request(
        http(server),
        "POST",
        "/v1/session",
        &[("Content-Type", "application/json"), ("Origin", SAME_ORIGIN), ("X-Latchkey-CSRF", "")],
        body.to_string().as_bytes(),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let cookie = response.header("set-cookie").expect("a session cookie");
    let value = cookie.split(';').next().unwrap().strip_prefix("latchkey_session=").unwrap().to_owned();
    (value, response.json()["csrf_token"].as_str().unwrap().to_owned())
}

/// A request with the session cookie and the given extra headers.
fn with_cookie(
    server: &TestServer,
    cookie: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> Response {
    let cookie = format!("latchkey_session={cookie}");
    let mut headers = vec![("Cookie", cookie.as_str())];
    headers.extend_from_slice(extra);
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    request(http(server), method, path, &headers, body.as_bytes())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Whether `secret` logs in over the binary protocol.
fn binary_login(server: &TestServer, secret: &str) -> bool {
    runtime().block_on(async {
        let mut client = Client::connect(server.address).await.expect("connect over TCP");
        client.login_with_personal_access_token(secret).await.is_ok()
    })
}

#[test]
fn console_responses_carry_security_headers_and_refuse_cross_site_changes() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());

    // The page and its files: built in, with the security headers.
    let page = request(http(&server), "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.text().contains("<script type=\"module\" src=\"/console/app.js\"></script>"));
    for response in [&page, &request(http(&server), "GET", "/v1/tokens", &[("Authorization", &root())], b"")]
    {
        let policy = response.header("content-security-policy").expect("a CSP");
        assert!(policy.contains("script-src 'self'") && policy.contains("style-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }
    // Answers only a machine reads go without the browser-only headers:
    // RabbitMQ's questions and a forward-auth allow. A forward-auth deny
    // may reach a browser (Traefik returns it as it is): it keeps them.
    let (id, secret) = create(&server, json!({"name": "header-check"}));
    let bearer = format!("Bearer {secret}");
    let allow = request(http(&server), "GET", "/v1/auth/check", &[("Authorization", &bearer)], b"");
    let deny = request(http(&server), "GET", "/v1/auth/check", &[], b"");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let broker =
        request(http(&server), "POST", "/v1/rabbitmq/vhost", &form, b"username=a/b&vhost=v&ip=127.0.0.1");
    assert_eq!((allow.status, deny.status, broker.status, broker.text().as_str()), (200, 401, 200, "deny"));
    for machine_only in [&allow, &broker] {
        assert_eq!(machine_only.header("content-security-policy"), None);
        assert_eq!(machine_only.header("x-frame-options"), None);
        assert_eq!(machine_only.header("cache-control"), Some("no-store"));
    }
    assert!(
        deny.header("content-security-policy").is_some_and(|policy| policy.contains("default-src 'none'"))
    );
    assert_eq!(deny.header("x-frame-options"), Some("DENY"));
    assert_eq!(rest(&server, "DELETE", &format!("/v1/tokens/{id}"), None).status, 204);

    let script = request(http(&server), "GET", "/console/app.js", &[], b"");
    assert_eq!((script.status, script.header("content-type")), (200, Some("text/javascript; charset=utf-8")));
    assert_eq!(request(http(&server), "GET", "/console/secrets.txt", &[], b"").status, 404);

    // A bad sign-in: 401, and no WWW-Authenticate for the console (a
    // browser would ask for a password in a box of its own).
    let refused = request(
        http(&server),
        "POST",
        "/v1/session",
        &[("X-Latchkey-CSRF", ""), ("Origin", SAME_ORIGIN)],
        json!({"username": "iggy", "password": "wrong"}).to_string().as_bytes(),
    );
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.header("www-authenticate"), None);
    // A sign-in another site makes the browser send is refused, right
    // password or not (login CSRF).
    for foreign in [("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")] {
        let response = request(
            http(&server),
            "POST",
            "/v1/session",
            &[foreign],
            json!({"username": "iggy", "password": "iggy"}).to_string().as_bytes(),
        );
        assert_eq!(response.status, 403, "{foreign:?}: {}", response.text());
        assert_eq!(response.header("set-cookie"), None);
    }

    // A password sign-in: the cookie's attributes.
    let response = request(
        http(&server),
        "POST",
        "/v1/session",
        &[("Origin", SAME_ORIGIN), ("Sec-Fetch-Site", "same-origin")],
        json!({"username": "iggy", "password": "iggy"}).to_string().as_bytes(),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let set_cookie = response.header("set-cookie").unwrap().to_owned();
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    let cookie = attributes[0].strip_prefix("latchkey_session=").expect("the cookie's name").to_owned();
    assert!(cookie.len() >= 22, "at least 128 bits: {cookie}");
    for wanted in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=28800"] {
        assert!(attributes.contains(&wanted), "{wanted} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: no Secure ({set_cookie})");
    let session = response.json();
    assert_eq!(session["username"], "iggy");
    assert_eq!(session["authenticated_with"], "password");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    assert_ne!(csrf, cookie);

    // Reads need the cookie only; changes need the CSRF header too, and
    // must not come from another origin.
    let listed = with_cookie(&server, &cookie, "GET", "/v1/tokens", &[], None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let new_token = || Some(json!({"name": "from-console"}));
    let refusals: [&[(&str, &str)]; 5] = [
        &[],
        &[("X-Latchkey-CSRF", "")],
        &[("X-Latchkey-CSRF", "not-the-token")],
        &[("X-Latchkey-CSRF", &csrf), ("Origin", "http://evil.example")],
        &[("X-Latchkey-CSRF", &csrf), ("Sec-Fetch-Site", "same-site")],
    ];
    for headers in refusals {
        let response = with_cookie(&server, &cookie, "POST", "/v1/tokens", headers, new_token());
        assert_eq!(response.status, 403, "{headers:?}: {}", response.text());
        assert_eq!(response.json()["code"], 41);
    }
    let deleted = with_cookie(&server, &cookie, "DELETE", "/v1/tokens", &[], None);
    assert_eq!(deleted.status, 403);
    let signed_out = with_cookie(&server, &cookie, "DELETE", "/v1/session", &[], None);
    assert_eq!(signed_out.status, 403, "sign-out needs the CSRF header too");
    assert_eq!(rest(&server, "GET", "/v1/tokens?status=all", None).json()["tokens"], json!([]));
    let same_origin =
        [("X-Latchkey-CSRF", csrf.as_str()), ("Origin", SAME_ORIGIN), ("Sec-Fetch-Site", "same-origin")];
    let created = with_cookie(&server, &cookie, "POST", "/v1/tokens", &same_origin, new_token());
    assert_eq!(created.status, 201, "{}", created.text());
    let me = with_cookie(&server, &cookie, "GET", "/v1/me", &[], None);
    assert_eq!(
        (me.json()["username"].clone(), me.json()["authenticated_with"].clone()),
        (json!("iggy"), json!("password"))
    );
    // Root's backup and introspection never take the cookie.
    let backup = with_cookie(&server, &cookie, "POST", "/v1/admin/backup", &same_origin, None);
    assert_eq!(backup.status, 401, "{}", backup.text());

    // Signing out ends the session for good and clears the cookie.
    let out = with_cookie(&server, &cookie, "DELETE", "/v1/session", &same_origin, None);
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = with_cookie(&server, &cookie, "GET", "/v1/tokens", &[("X-Latchkey-CSRF", "")], None);
    assert_eq!(after.status, 401);
    assert_eq!(after.header("www-authenticate"), None);
    assert_eq!(with_cookie(&server, &cookie, "GET", "/v1/session", &[], None).status, 401);

    // A session signed in with a token ends once the token is revoked,
    // deleted or expired, or its scopes or networks are edited, checked on
    // every request.
    let (revoked_id, revoked) = create(&server, json!({"name": "to-revoke"}));
    let (deleted_id, deleted) = create(&server, json!({"name": "to-delete"}));
    let (_, expiring) = create(&server, json!({"name": "to-expire", "expires_in": "2s"}));
    let (edited_id, edited) = create(&server, json!({"name": "to-edit", "scopes": ["tokens:read"]}));
    let sessions: Vec<String> = [&revoked, &deleted, &expiring, &edited]
        .iter()
        .map(|secret| sign_in(&server, json!({"token": secret})).0)
        .collect();
    for session in &sessions {
        let current = with_cookie(&server, session, "GET", "/v1/session", &[], None);
        assert_eq!(current.json()["authenticated_with"], "token");
        assert_eq!(with_cookie(&server, session, "GET", "/v1/tokens", &[], None).status, 200);
    }
    assert_eq!(rest(&server, "POST", &format!("/v1/tokens/{revoked_id}/revoke"), None).status, 204);
    assert_eq!(rest(&server, "DELETE", &format!("/v1/tokens/{deleted_id}"), None).status, 204);
    let access = json!({"add_scopes": ["me:read"]});
    assert_eq!(rest(&server, "PATCH", &format!("/v1/tokens/{edited_id}/access"), Some(access)).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    for session in &sessions {
        assert_eq!(with_cookie(&server, session, "GET", "/v1/tokens", &[], None).status, 401);
    }

    // No session id or CSRF token in the log.
    let logs = server.logs();
    assert!(logs.contains("console_session_started"), "{logs}");
    for secret in [&cookie, &csrf, &sessions[0]] {
        assert!(!logs.contains(secret.as_str()), "a session secret reached the log");
    }

    // With the console off: no pages, no sessions.
    drop(server);
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_HTTP_CONSOLE", "false"));
    assert_eq!(request(http(&server), "GET", "/", &[], b"").status, 404);
    assert_eq!(request(http(&server), "GET", "/console/app.js", &[], b"").status, 404);
    let body = json!({"username": "iggy", "password": "iggy"}).to_string();
    assert_eq!(request(http(&server), "POST", "/v1/session", &[], body.as_bytes()).status, 404);
}

#[test]
fn behind_a_trusted_tls_proxy_the_cookie_is_secure_and_the_forwarded_host_is_the_origin() {
    let sign_in_via_proxy = |server: &TestServer| {
        let headers = [
            ("Origin", "https://tokens.example"),
            ("X-Forwarded-Host", "tokens.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "192.0.2.7"),
        ];
        let body = json!({"username": "iggy", "password": "iggy"}).to_string();
        request(http(server), "POST", "/v1/session", &headers, body.as_bytes())
    };
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_HTTP_TRUSTED_PROXIES", "127.0.0.1");
    let server = TestServer::start(&home, &spec);
    let response = sign_in_via_proxy(&server);
    assert_eq!(response.status, 201, "{}", response.text());
    let cookie = response.header("set-cookie").unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    // From a peer that is no trusted proxy, the X-Forwarded headers count
    // for nothing: the origin is not the Host, so it is refused.
    drop(server);
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    assert_eq!(sign_in_via_proxy(&server).status, 403);
}

#[test]
fn a_password_session_ends_when_its_user_is_made_inactive() {
    let alice = |active| {
        common::users_config(&[common::TestUser {
            id: 1,
            username: "alice",
            password: "alice-password",
            active,
        }])
    };
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&alice(true)));
    let (cookie, _) = sign_in(&server, json!({"username": "alice", "password": "alice-password"}));
    let (again, _) = sign_in(&server, json!({"username": "alice", "password": "alice-password"}));
    assert_eq!(with_cookie(&server, &cookie, "GET", "/v1/tokens", &[], None).status, 200);
    // The harness's config file, rewritten, and SIGHUP.
    std::fs::write(home.dir.path().join("server.toml"), alice(false)).unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server.logs().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload: {}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    for session in [&cookie, &again] {
        assert_eq!(with_cookie(&server, session, "GET", "/v1/tokens", &[], None).status, 401);
    }
    // The log line may reach the harness's reader just after the answer.
    while !server.logs().contains("reason=\"user_inactive\"") {
        assert!(std::time::Instant::now() < deadline, "no user_inactive event: {}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failed_console_sign_ins_are_throttled_like_any_login() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "3")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "0");
    let server = TestServer::start(&home, &spec);
    let attempt = |body: Value| {
        let headers =
            [("Content-Type", "application/json"), ("Origin", SAME_ORIGIN), ("X-Latchkey-CSRF", "")];
        request(http(&server), "POST", "/v1/session", &headers, body.to_string().as_bytes())
    };
    for guess in ["one", "two"] {
        assert_eq!(attempt(json!({"username": "iggy", "password": guess})).status, 401);
    }
    assert_eq!(attempt(json!({"token": "lk_a_guess"})).status, 401);
    // The address's bucket is empty: the right password is refused too,
    // at the console and over Basic alike (one throttle for every login).
    let refused = attempt(json!({"username": "iggy", "password": "iggy"}));
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["name"], "TooManyFailedLogins");
    assert_eq!(rest(&server, "GET", "/v1/me", None).status, 429);
}

/// Chromium and chromedriver, or a skip naming the packages.
fn browser_or_skip(width: u32, height: u32) -> Option<Browser> {
    match find_browser() {
        Some((chromium, driver)) => Some(Browser::start(&chromium, &driver, width, height)),
        None => {
            skip(
                "chromium and chromedriver are not installed",
                "apt-get install -y --no-install-recommends chromium chromium-driver",
            );
            None
        }
    }
}

/// Saves the page at desktop and phone width when
/// `LATCHKEY_CONSOLE_SCREENSHOTS` names a directory.
struct Screenshots(Option<PathBuf>);

impl Screenshots {
    fn from_env() -> Screenshots {
        Screenshots(std::env::var_os("LATCHKEY_CONSOLE_SCREENSHOTS").map(PathBuf::from))
    }

    fn take(&self, browser: &Browser, name: &str) {
        let Some(dir) = &self.0 else { return };
        std::fs::create_dir_all(dir).unwrap();
        for (width, height) in [(1440, 900), (375, 812)] {
            browser.resize(width, height);
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(dir.join(format!("{name}-{width}.png")), browser.screenshot()).unwrap();
        }
        browser.resize(1440, 900);
    }
}

/// Confirms the page's dialog.
fn confirm(browser: &Browser) {
    browser.click_on("#confirm-yes");
}

/// The names in the tokens table now.
fn names(browser: &Browser) -> Vec<String> {
    browser.find_all("#tokens-body [data-slot=name]").iter().map(|name| browser.text(name)).collect()
}

fn show(browser: &Browser, status: &str) {
    browser.click_on(&format!("#status-filter option[value={status}]"));
    browser.wait_until(&format!("the {status} filter"), || {
        browser.url().ends_with(&format!("status={status}")).then_some(())
    });
}

#[test]
fn the_console_manages_tokens_in_a_real_browser() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(browser) = browser_or_skip(1440, 900) else { return };
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let base = format!("http://{}/", http(&server));
    let shots = Screenshots::from_env();

    // Bad sign-ins say so, and clear the secret typed.
    browser.go(&base);
    browser.find("#password-form");
    assert_eq!(browser.focused(), browser.find("#username"), "the page starts where the user types");
    shots.take(&browser, "sign-in");
    browser.fill("#username", "iggy");
    browser.fill("#password", "not-the-password");
    browser.click_on("#password-submit");
    browser.wait_text("[data-slot=error]", "were not accepted");
    assert_eq!(browser.property(&browser.find("#password"), "value"), "");
    browser.fill("#token", "lk_not_a_token");
    browser.click_on("#token-submit");
    browser.wait_text("[data-slot=error]", "were not accepted");

    // Sign in with the password by keyboard alone: type, Tab, type, Enter.
    browser.fill("#username", "");
    browser.click_on("#username");
    browser.keys("iggy\u{E004}");
    assert_eq!(browser.focused(), browser.find("#password"));
    browser.keys("iggy\u{E007}");
    browser.wait_text("#who", "iggy · password");
    browser.wait_text("#tokens-empty", "You have no active tokens.");
    assert_eq!(browser.text(&browser.find("#tokens-empty a")), "Create a token");
    // The cookie is HttpOnly and SameSite=Strict; nothing in storage.
    let cookies = browser.cookies();
    let session =
        cookies.iter().find(|cookie| cookie["name"] == "latchkey_session").expect("the session cookie");
    assert_eq!((session["httpOnly"].clone(), session["sameSite"].clone()), (json!(true), json!("Strict")));
    let script = "return [document.cookie, localStorage.length, sessionStorage.length]";
    assert_eq!(browser.script(script), json!(["", 0, 0]));

    // Create a token with a description, a scope and a network.
    browser.click_on("#new-token");
    browser.fill("#name", "ci-deploy");
    browser.fill("#description", "deploys from CI");
    browser.fill("#scopes", "tokens:read");
    browser.fill("#networks", "127.0.0.0/8");
    shots.take(&browser, "create");
    browser.click_on("#create-submit");
    browser.wait_text("h1", "Token created");
    let secret = browser.property(&browser.find("#secret"), "value").as_str().unwrap().to_owned();
    assert!(secret.len() > 20, "{secret}");
    assert!(!browser.url().contains(&secret), "the secret is in the address");
    // Copy: to the clipboard, or selected for Ctrl+C where the browser
    // keeps the clipboard to itself (headless may).
    browser.click_on("#copy-secret");
    let copied = browser.wait_until("the copy's outcome", || {
        let text = browser.text(&browser.find("[data-slot=copied]"));
        (!text.is_empty()).then_some(text)
    });
    assert!(copied == "Copied to the clipboard." || copied.contains("Ctrl+C"), "{copied}");
    let selected = browser.script("return window.getSelection().toString() || document.activeElement.value");
    assert_eq!(selected, secret.as_str());
    browser.wait_text("[data-slot=name]", "ci-deploy");
    shots.take(&browser, "secret");
    // The secret logs in over the binary protocol.
    assert!(binary_login(&server, &secret));
    // Leaving the view drops it from the page.
    browser.click_on("#secret-done");
    browser.wait_text("h1", "ci-deploy");
    let page = "return document.documentElement.outerHTML + \
                [...document.querySelectorAll('input, textarea')].map((field) => field.value).join(' ')";
    assert!(!browser.script(page).as_str().unwrap().contains(&secret), "the secret stayed in the page");

    // The detail page: scopes, networks, times, last use and address.
    browser.wait_text("[data-slot=scopes]", "tokens:read");
    browser.wait_text("[data-slot=networks]", "127.0.0.0/8");
    browser.wait_text("[data-slot=description]", "deploys from CI");
    browser.wait_text("[data-slot=status]", "active");
    assert_eq!(browser.text(&browser.find("[data-slot=revoked]")), "No");
    assert_ne!(browser.text(&browser.find("[data-slot=created]")), "—");
    browser.wait_until("the last use from 127.0.0.1", || {
        browser.refresh();
        let used = browser.wait_text("[data-slot=used]", "");
        used.contains("from 127.0.0.1").then_some(())
    });
    shots.take(&browser, "detail");
    let detail = browser.url();
    // Times are the browser's: in Tokyo (UTC+9, no summer time).
    browser.time_zone("Asia/Tokyo");
    browser.refresh();
    browser.wait_text("#zone", "Times are shown in Asia/Tokyo.");
    browser.wait_text("[data-slot=created]", "GMT+9");
    browser.wait_text("[data-slot=used]", "GMT+9");
    browser.time_zone("UTC");
    browser.refresh();
    browser.wait_text("[data-slot=created]", "UTC");

    // Regenerate (rotate) the active token with a new lifetime: a new
    // secret that works, the old one refused, the new expiry shown.
    let expiry_before = browser.text(&browser.find("[data-slot=expires]"));
    browser.click_on("#rotate-expiry option[value='7d']");
    browser.click_on("#regenerate");
    confirm(&browser);
    browser.wait_text("h1", "New secret");
    let rotated = browser.property(&browser.find("#secret"), "value").as_str().unwrap().to_owned();
    assert_ne!(rotated, secret);
    assert!(binary_login(&server, &rotated));
    assert!(!binary_login(&server, &secret));
    browser.click_on("#secret-done");
    browser.wait_text("h1", "ci-deploy");
    browser.wait_text("[data-slot=scopes]", "tokens:read");
    assert_ne!(browser.text(&browser.find("[data-slot=expires]")), expiry_before);

    // Rename and describe it; a name taken already is refused.
    create(&server, json!({"name": "taken-name"}));
    browser.fill("#edit-name", "taken-name");
    browser.click_on("#rename-submit");
    browser.wait_text("[data-slot=error]", "You have a token with that name already. Pick another name.");
    browser.fill("#edit-name", "ci-deploy-2");
    browser.fill("#edit-description", "deploys from CI, renamed");
    browser.click_on("#rename-submit");
    browser.wait_text("[data-slot=notice]", "Saved.");
    browser.wait_text("h1", "ci-deploy-2");
    browser.wait_text("[data-slot=description]", "deploys from CI, renamed");
    browser.fill("#edit-name", "ci-deploy");
    browser.click_on("#rename-submit");
    browser.wait_text("h1", "ci-deploy");
    assert_eq!(rest(&server, "GET", "/v1/tokens/1", None).json()["name"], "ci-deploy");
    let taken = rest(&server, "GET", "/v1/tokens?status=all", None).json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["name"] == "taken-name")
        .map(|token| token["id"].as_u64().unwrap())
        .unwrap();
    assert_eq!(rest(&server, "DELETE", &format!("/v1/tokens/{taken}"), None).status, 204);

    // Create refusals say what to do next.
    browser.click_on("nav a[href='#/new']");
    browser.fill("#name", "ci-deploy");
    browser.click_on("#create-submit");
    browser.wait_text("[data-slot=error]", "You have a token with that name already. Pick another name.");
    browser.fill("#name", "net-check");
    browser.fill("#networks", "not-a-network");
    browser.click_on("#create-submit");
    browser.wait_text("[data-slot=error]", "A network is not valid");
    browser.wait_text("[data-slot=error]", "Give an address or a CIDR");
    browser.go(&detail);
    browser.wait_text("h1", "ci-deploy");

    // Scopes on the token's page: a bad one says what to do; one added by
    // keyboard (Enter); one deleted from its row; the last one asks first,
    // since no scopes is full access; Delete all.
    let scopes_now = || rest(&server, "GET", "/v1/tokens/1", None).json()["scopes"].clone();
    browser.wait_text("[data-slot=scopes]", "tokens:read");
    browser.fill("#add-scope", "not a scope");
    browser.click_on("#add-scope-submit");
    browser.wait_text("[data-slot=error]", "A scope is not valid");
    browser.fill("#add-scope", "stream:orders:read");
    browser.send_keys(&browser.find("#add-scope"), "\u{E007}");
    browser.wait_text("[data-slot=notice]", "Added stream:orders:read.");
    browser.wait_text("[data-slot=scopes]", "stream:orders:read");
    assert_eq!(scopes_now(), json!(["tokens:read", "stream:orders:read"]));
    browser.wait_until("the field to be cleared", || {
        (browser.property(&browser.find("#add-scope"), "value") == "").then_some(())
    });
    assert_eq!(browser.focused(), browser.find("#add-scope"), "and keeps the focus");
    browser.script("document.getElementById('scopes-card').scrollIntoView()");
    shots.take(&browser, "detail-access");
    browser.click_on("[data-slot=scopes] button[aria-label='Delete scope tokens:read']");
    browser.wait_text("[data-slot=notice]", "Deleted tokens:read.");
    assert_eq!(scopes_now(), json!(["stream:orders:read"]));
    assert!(!browser.text(&browser.find("[data-slot=scopes]")).contains("tokens:read"));
    browser.click_on("[data-slot=scopes] button[aria-label='Delete scope stream:orders:read']");
    browser.wait_text("#confirm-text", "With no scopes the token has full access.");
    assert_eq!(browser.focused(), browser.find("#confirm-no"));
    browser.keys("\u{E00C}");
    browser.wait_until("the dialog to close", || {
        (!browser.displayed(&browser.find_now("#confirm").unwrap())).then_some(())
    });
    assert_eq!(scopes_now(), json!(["stream:orders:read"]), "Escape deletes nothing");
    browser.fill("#add-scope", "me:read");
    browser.click_on("#add-scope-submit");
    browser.wait_text("[data-slot=scopes]", "me:read");
    browser.click_on("#clear-scopes");
    browser.wait_text("#confirm-text", "Delete every scope of “ci-deploy”?");
    confirm(&browser);
    browser.wait_text("[data-slot=scopes]", "None: full access");
    assert_eq!(scopes_now(), json!([]));
    assert!(!browser.displayed(&browser.find_now("#clear-scopes").unwrap()), "nothing left to delete");
    browser.fill("#add-scope", "tokens:read");
    browser.click_on("#add-scope-submit");
    browser.wait_text("[data-slot=scopes]", "tokens:read");

    // Networks the same way; the token keeps logging in from here.
    let networks_now = || rest(&server, "GET", "/v1/tokens/1", None).json()["networks"].clone();
    browser.fill("#add-network", "10.0.0.1/8");
    browser.click_on("#add-network-submit");
    browser.wait_text("[data-slot=error]", "A network is not valid");
    browser.fill("#add-network", "10.0.0.0/8");
    browser.click_on("#add-network-submit");
    browser.wait_text("[data-slot=networks]", "10.0.0.0/8");
    assert_eq!(networks_now(), json!(["127.0.0.0/8", "10.0.0.0/8"]));
    browser.click_on("[data-slot=networks] button[aria-label='Delete network 127.0.0.0/8']");
    browser.wait_text("[data-slot=notice]", "Deleted 127.0.0.0/8.");
    assert_eq!(networks_now(), json!(["10.0.0.0/8"]));
    assert!(!binary_login(&server, &rotated), "127.0.0.1 is outside 10.0.0.0/8");
    browser.click_on("#clear-networks");
    browser.wait_text("#confirm-text", "can be used from any address");
    confirm(&browser);
    browser.wait_text("[data-slot=networks]", "None: any address");
    assert_eq!(networks_now(), json!([]));
    assert!(binary_login(&server, &rotated));
    // At a phone's width the tables fit: nothing scrolls sideways.
    browser.resize(375, 812);
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth";
    browser.wait_until("the page to fit 375 px", || (browser.script(fits) == json!(true)).then_some(()));
    browser.resize(1440, 900);

    // Revoke: the page says so, offers no Revoke but Regenerate, which
    // brings the token back; the secret stops working until then.
    browser.click_on("#revoke");
    confirm(&browser);
    browser.wait_text("[data-slot=notice]", "Revoked “ci-deploy”.");
    browser.wait_text("[data-slot=status]", "revoked");
    assert_ne!(browser.text(&browser.find("[data-slot=revoked]")), "No");
    assert!(!browser.displayed(&browser.find_now("#revoke").unwrap()));
    assert!(!binary_login(&server, &rotated));
    browser.wait_text("[data-slot=regenerate-hint]", "Revoked. Regenerate brings it back");
    browser.script("window.scrollTo(0, 0)");
    shots.take(&browser, "detail-revoked");
    browser.click_on("#rotate-expiry option[value='30d']");
    browser.click_on("#regenerate");
    browser.wait_text("#confirm-text", "It becomes active again with a new secret");
    confirm(&browser);
    browser.wait_text("h1", "Token active again");
    let revived = browser.property(&browser.find("#secret"), "value").as_str().unwrap().to_owned();
    assert_ne!(revived, rotated);
    assert!(binary_login(&server, &revived), "the new secret logs in over TCP");
    assert!(!binary_login(&server, &rotated), "the old one stays refused");
    browser.click_on("#secret-done");
    browser.wait_text("[data-slot=status]", "active");
    assert_eq!(browser.text(&browser.find("[data-slot=revoked]")), "No");
    browser.wait_text("[data-slot=scopes]", "tokens:read");
    assert!(browser.displayed(&browser.find_now("#revoke").unwrap()));
    // Revoked again, for the rest of this test.
    browser.click_on("#revoke");
    confirm(&browser);
    browser.wait_text("[data-slot=status]", "revoked");
    assert!(!binary_login(&server, &revived));

    // The status filter.
    create(&server, json!({"name": "billing-read", "description": "billing reports", "scopes": ["me:read"]}));
    create(&server, json!({"name": "short-lived", "expires_in": "1s"}));
    std::thread::sleep(Duration::from_millis(1100));
    browser.click_on("nav a[href='#/tokens']");
    browser.wait_text("#tokens-body", "billing-read");
    assert_eq!(names(&browser), ["billing-read"]);
    show(&browser, "revoked");
    browser.wait_text("#tokens-body", "ci-deploy");
    assert_eq!(names(&browser), ["ci-deploy"]);
    show(&browser, "expired");
    browser.wait_text("#tokens-body", "short-lived");
    assert_eq!(names(&browser), ["short-lived"]);
    show(&browser, "all");
    browser.wait_text("#page-range", "Tokens 1–3");
    assert_eq!(names(&browser), ["ci-deploy", "billing-read", "short-lived"]);
    assert_eq!(browser.text(&browser.find("#tokens-body tr:nth-child(2) [data-slot=status]")), "active");
    shots.take(&browser, "tokens");

    // Nothing moves when the data arrives, and dark follows the system.
    browser.refresh();
    browser.wait_text("#page-range", "Tokens 1–3");
    let shift = browser.layout_shift();
    assert!(shift < 0.01, "the page moved as it loaded: layout shift {shift}");
    let background = "return getComputedStyle(document.body).backgroundColor";
    assert_eq!(browser.script(background), "rgb(246, 247, 249)");
    browser.color_scheme("dark");
    assert_eq!(browser.script(background), "rgb(17, 20, 24)");
    shots.take(&browser, "tokens-dark");
    browser.color_scheme("light");

    // Keyboard: a row's Delete opens the dialog with the focus on Cancel;
    // Escape closes it and deletes nothing.
    let delete = browser.find("#tokens-body button[aria-label='Delete billing-read']");
    browser.send_keys(&delete, "\u{E007}");
    browser.find("#confirm-yes");
    assert_eq!(browser.focused(), browser.find("#confirm-no"));
    browser.keys("\u{E00C}");
    browser.wait_until("the dialog to close", || {
        (!browser.displayed(&browser.find_now("#confirm").unwrap())).then_some(())
    });
    assert_eq!(names(&browser), ["ci-deploy", "billing-read", "short-lived"]);

    // Delete one, from its row.
    browser.click_on("#tokens-body button[aria-label='Delete short-lived']");
    confirm(&browser);
    browser.wait_text("[data-slot=notice]", "Deleted “short-lived”.");
    browser.wait_until("the row to go", || (names(&browser) == ["ci-deploy", "billing-read"]).then_some(()));

    // Revoke all: every active one.
    create(&server, json!({"name": "another-one"}));
    show(&browser, "active");
    browser.wait_text("#tokens-body", "another-one");
    browser.click_on("#revoke-all");
    confirm(&browser);
    browser.wait_text("[data-slot=notice]", "2 tokens revoked.");
    browser.wait_text("#tokens-empty", "You have no active tokens.");

    // Delete all.
    show(&browser, "all");
    browser.wait_text("#page-range", "Tokens 1–3");
    browser.click_on("#delete-all");
    confirm(&browser);
    browser.wait_text("[data-slot=notice]", "3 tokens deleted.");
    browser.wait_text("#tokens-empty", "You have no tokens yet.");
    assert_eq!(rest(&server, "GET", "/v1/tokens?status=all", None).json()["tokens"], json!([]));

    // Sign out: back to the sign-in page, and the cookie no longer works.
    browser.click_on("#sign-out");
    browser.wait_text("[data-slot=notice]", "You are signed out.");
    browser.find("#password-form");
    browser.go(&format!("{base}#/tokens"));
    browser.find("#password-form");
    assert!(browser.cookies().iter().all(|cookie| cookie["name"] != "latchkey_session"));

    // Sign in with a token; the session ends when the token is revoked.
    let (id, token) = create(&server, json!({"name": "console-login"}));
    browser.fill("#token", &token);
    browser.click_on("#token-submit");
    browser.wait_text("#who", "iggy · token");
    browser.wait_text("#tokens-body", "console-login");
    assert_eq!(rest(&server, "POST", &format!("/v1/tokens/{id}/revoke"), None).status, 204);
    browser.click_on("nav a[href='#/new']");
    browser.click_on("nav a[href='#/tokens']");
    browser.wait_text("[data-slot=error]", "Your session ended");
    browser.find("#token-form");

    // A token that may read but not write: the list shows, a create says
    // what to do instead.
    let (_, reader) = create(&server, json!({"name": "reader", "scopes": ["tokens:read"]}));
    browser.fill("#token", &reader);
    browser.click_on("#token-submit");
    browser.wait_text("#tokens-body", "reader");
    browser.click_on("nav a[href='#/new']");
    browser.fill("#name", "written-by-reader");
    browser.click_on("#create-submit");
    browser.wait_text("[data-slot=error]", "The token you signed in with may not do that");
    browser.wait_text("[data-slot=error]", "sign in with your password");

    // No script or style was refused by the Content-Security-Policy, and
    // no script failed.
    let log = browser.console_log();
    assert!(!log.contains("Content Security Policy") && !log.contains("Uncaught"), "{log}");
}

#[test]
fn the_console_pages_past_a_thousand_tokens() {
    const TOKENS: usize = 1050;
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(browser) = browser_or_skip(1440, 900) else { return };
    let home = DataHome::new();
    let spec = ServerSpec::default_root().config("[personal_access_token]\nmax_tokens_per_user = 1100\n");
    let server = TestServer::start(&home, &spec);
    runtime().block_on(async {
        let mut client = Client::connect(server.address).await.unwrap();
        client.login_user(ROOT_AUTH.0, ROOT_AUTH.1).await.unwrap();
        for n in 1..=TOKENS {
            client.create_token(&NewToken::named(format!("bulk-{n:04}"))).await.unwrap();
        }
    });

    browser.go(&format!("http://{}/", http(&server)));
    browser.fill("#username", "iggy");
    browser.fill("#password", "iggy");
    browser.click_on("#password-submit");
    browser.wait_text("#page-range", "Tokens 1–100");
    assert_eq!(names(&browser).first().map(String::as_str), Some("bulk-0001"));
    assert_eq!(browser.property(&browser.find("#page-prev"), "disabled"), json!(true));
    for page in 1..=10 {
        browser.click_on("#page-next");
        let first = page * 100 + 1;
        browser.wait_text("#page-range", &format!("Tokens {first}–"));
    }
    browser.wait_text("#page-range", "Tokens 1001–1050");
    let shown = names(&browser);
    assert_eq!(
        (shown.len(), shown.first().unwrap().as_str(), shown.last().unwrap().as_str()),
        (50, "bulk-1001", "bulk-1050")
    );
    assert_eq!(browser.property(&browser.find("#page-next"), "disabled"), json!(true));
    browser.click_on("#page-prev");
    browser.wait_text("#page-range", "Tokens 901–1000");
    assert_eq!(names(&browser).last().map(String::as_str), Some("bulk-1000"));
}
