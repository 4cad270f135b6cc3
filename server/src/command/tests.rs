//! Commands run against a real [`Context`] (the user directory, Argon2 on
//! the blocking pool, the throttle, the policy, the registry's readers and
//! the writer thread), many sessions at once in one process. These count
//! what the end-to-end tests cannot see from outside: Argon2 checks begun,
//! policy loads per request, use-ledger locks per list. The writer's journal
//! keeps nothing: these tests are about what happens before the disk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use latchkey_protocol::body::{CreatePersonalAccessToken, LoginUser, LoginWithPersonalAccessToken};
use latchkey_protocol::ext::{
    AccessEdit, CreateToken, DeleteToken, EditTokenAccess, ListTokens, RevokeToken, RotateToken,
    TokenSelector, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Request, Secret};

use super::{Context, ReplyBody, Session, handle};
use crate::auth::passwords::PasswordVerifier;
use crate::auth::policy::TokenPolicy;
use crate::auth::throttle::LoginThrottle;
use crate::auth::users::{Users, hash_password};
use crate::auth::{Auth, TokenKey};
use crate::config::{LoginThrottleConfig, PersonalAccessTokenConfig};
use crate::datadir::RootCredentials;
use crate::registry::{Mutation, Readers, RegistryPublisher, Replica, UseLedger};
use crate::store::{self, Journal, StoreLimits};

const ROOT: &str = "iggy";
const ROOT_PASSWORD: &str = "root-password";

struct NoJournal;

impl Journal for NoJournal {
    fn append(&mut self, _batch: &[Mutation], _commit_at_us: u64) -> std::io::Result<()> {
        Ok(())
    }
}

/// A [`Context`] wired as `server::start` wires it, minus the listener and
/// the disk.
struct Harness {
    ctx: Arc<Context>,
    writer: Option<JoinHandle<RegistryPublisher>>,
}

impl Harness {
    fn new(throttle: LoginThrottleConfig) -> Harness {
        let root = RootCredentials { username: ROOT.into(), password_hash: hash_password(ROOT_PASSWORD) };
        let users = Users::new(&root, &[]).unwrap();
        let tokens = PersonalAccessTokenConfig::default();
        let (readers, publisher) = Readers::new(Replica::new(), Replica::new());
        let (writer, inbox) = store::writer::channel();
        let limits = StoreLimits { max_tokens_per_user: tokens.max_tokens_per_user };
        let join = store::writer::start(inbox, Replica::new(), 1, limits, NoJournal, publisher);
        let auth = Auth::new(
            users,
            TokenPolicy::from_config(&tokens),
            PasswordVerifier::new(2, 1024),
            LoginThrottle::new(&throttle),
            TokenKey::new([7; 32]),
        );
        let ctx = Arc::new(Context {
            auth,
            registry: readers,
            uses: UseLedger::default(),
            writer,
            freshness: Arc::new(crate::store::Freshness::always()),
            local_addr: "127.0.0.1:8090".parse().unwrap(),
        });
        Harness { ctx, writer: Some(join) }
    }

    fn unthrottled() -> Harness {
        Harness::new(LoginThrottleConfig { enabled: false, ..LoginThrottleConfig::default() })
    }

    /// A session logged in as root with its password.
    async fn root_session(&self, client_id: u32) -> Session {
        let mut session = Session::new(client_id, peer("192.0.2.1"));
        expect_ok(handle(password_login(ROOT_PASSWORD), &mut session, &self.ctx).await);
        session
    }

    /// A new full-access token of root's, created by `session`.
    async fn create_token(&self, session: &mut Session, name: &str) -> Secret {
        let create = CreatePersonalAccessToken { name: name.into(), expiry_us: 0 };
        match expect_ok(handle(Request::CreatePersonalAccessToken(create), session, &self.ctx).await) {
            ReplyBody::Token(raw) => raw.token,
            _ => panic!("create answered without a token"),
        }
    }

    /// A session logged in with `token`.
    async fn token_login(&self, client_id: u32, token: Secret) -> Session {
        let mut session = Session::new(client_id, peer("192.0.2.1"));
        let login = LoginWithPersonalAccessToken { token };
        expect_ok(handle(Request::LoginWithPersonalAccessToken(login), &mut session, &self.ctx).await);
        session
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.ctx.writer.stop();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40_000)
}

fn password_login(password: &str) -> Request {
    Request::LoginUser(LoginUser {
        username: ROOT.into(),
        password: Secret::from(password),
        version: None,
        context: None,
    })
}

fn expect_ok(reply: Result<ReplyBody, ErrorCode>) -> ReplyBody {
    reply.unwrap_or_else(|code| panic!("refused with {code:?}"))
}

fn throttle(address_burst: u32) -> LoginThrottleConfig {
    LoginThrottleConfig {
        enabled: true,
        per_address_burst: address_burst,
        per_address_per_minute: 0,
        // Not the bucket under test.
        per_user_burst: 100_000,
        per_user_per_minute: 0,
        ..LoginThrottleConfig::default()
    }
}

/// Runs `attempts` logins at once, each on its own session from `ip`, and
/// returns their codes (0 for a success).
async fn concurrent_logins(harness: &Harness, ip: &str, attempts: u32, request: fn() -> Request) -> Vec<u32> {
    let tasks: Vec<_> = (0..attempts)
        .map(|client_id| {
            let ctx = Arc::clone(&harness.ctx);
            let peer = peer(ip);
            tokio::spawn(async move {
                let mut session = Session::new(client_id, peer);
                match handle(request(), &mut session, &ctx).await {
                    Ok(_) => 0,
                    Err(code) => code.code(),
                }
            })
        })
        .collect();
    let mut codes = Vec::with_capacity(tasks.len());
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes
}

fn count(codes: &[u32], code: ErrorCode) -> usize {
    codes.iter().filter(|&&got| got == code.code()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_from_one_address_reach_argon2_at_most_the_burst() {
    const BURST: u32 = 5;
    let harness = Harness::new(throttle(BURST));
    let codes = concurrent_logins(&harness, "192.0.2.7", 200, || password_login("wrong-password")).await;
    let verifications = harness.ctx.auth.passwords.verifications();
    let failed = count(&codes, ErrorCode::InvalidCredentials);
    let throttled = count(&codes, ErrorCode::TooManyFailedLogins);
    assert_eq!(failed + throttled, codes.len(), "{codes:?}");
    // Every attempt that got an answer other than 20001 ran Argon2, and
    // no more than the burst may.
    assert_eq!(verifications, failed as u64);
    assert!(verifications <= u64::from(BURST), "{verifications} Argon2 checks for a burst of {BURST}");
    // The attempts in flight all failed, so the whole burst was used.
    assert_eq!(verifications, u64::from(BURST));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_write_loads_the_policy_once() {
    // A reload between two loads would pair an old rule with a new one (a
    // token session allowed to manage tokens under one policy, its lifetime
    // checked under another).
    let harness = Harness::unthrottled();
    let mut root = harness.root_session(1).await;
    let token = harness.create_token(&mut root, "session-token").await;
    let by_name = |name: &str| TokenSelector::Name(name.into());
    let requests = || {
        [
            Request::CreatePersonalAccessToken(CreatePersonalAccessToken {
                name: "by-42".into(),
                expiry_us: 0,
            }),
            Request::CreateToken(CreateToken { name: "by-9100".into(), ..CreateToken::default() }),
            Request::RotateToken(RotateToken { token: by_name("by-42"), expiry_us: 0, reactivate: false }),
            Request::UpdateToken(UpdateToken {
                token: by_name("by-42"),
                name: None,
                description: Some("d".into()),
            }),
            Request::EditTokenAccess(EditTokenAccess {
                token: by_name("by-42"),
                edits: vec![
                    AccessEdit::AddScope("me:read".into()),
                    AccessEdit::AddNetwork("10.0.0.0/8".into()),
                ],
            }),
            Request::RevokeToken(RevokeToken { token: by_name("by-42") }),
            Request::RotateToken(RotateToken { token: by_name("by-42"), expiry_us: 0, reactivate: true }),
            Request::DeleteToken(DeleteToken { token: by_name("by-42") }),
            Request::DeleteToken(DeleteToken { token: by_name("by-9100") }),
        ]
    };
    // A password session needs the policy for lifetimes only; a token
    // session also for whether it may manage tokens at all.
    let mut twice = Vec::new();
    for (kind, mut session) in [("password", root), ("token", harness.token_login(2, token).await)] {
        for request in requests() {
            let what = format!("{request:?} from a {kind} session");
            let before = harness.ctx.auth.policy_loads();
            expect_ok(handle(request, &mut session, &harness.ctx).await);
            let loads = harness.ctx.auth.policy_loads() - before;
            if loads > 1 {
                twice.push(format!("{what}: {loads} loads"));
            }
        }
    }
    assert!(twice.is_empty(), "the policy was loaded more than once per request:\n{}", twice.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_takes_the_use_ledger_lock_once_however_many_tokens_it_lists() {
    const TOKENS: usize = 50;
    let harness = Harness::unthrottled();
    let mut root = harness.root_session(1).await;
    let mut raw = Vec::new();
    for index in 0..TOKENS {
        raw.push(harness.create_token(&mut root, &format!("token-{index:02}")).await);
    }
    // Three tokens used: a connection hands its first use over at once, so
    // the ledger holds these until the store writes them.
    for (client_id, token) in raw.drain(..3).enumerate() {
        harness.token_login(10 + client_id as u32, token).await;
    }
    let before = harness.ctx.uses.locks();
    let list = ListTokens::default();
    let ReplyBody::Page(page) = expect_ok(handle(Request::ListTokens(list), &mut root, &harness.ctx).await)
    else {
        panic!("list answered without a page");
    };
    let locks = harness.ctx.uses.locks() - before;
    assert_eq!(page.tokens.len(), TOKENS);
    assert_eq!(locks, 1, "the ledger's lock was taken {locks} times for one list");
    // And the uses it holds are the ones shown.
    let used: Vec<&str> = page
        .tokens
        .iter()
        .filter(|token| token.last_used_at_us != 0)
        .map(|token| token.name.as_str())
        .collect();
    assert_eq!(used, ["token-00", "token-01", "token-02"]);
}
