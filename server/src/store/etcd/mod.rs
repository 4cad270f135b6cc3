//! The etcd backend: several Latchkey nodes share one etcd v3 cluster.
//!
//! etcd is the source of truth and its revision order is the one order
//! every node applies changes in. Each node:
//!
//! 1. **starts** by checking that its token-hash key matches the cluster's
//!    (`meta/key-check`), agreeing on root's credentials (`meta/root`,
//!    chosen once by the first node), and listing every token at one
//!    revision `R`, in pages ([`Cluster::load`]);
//! 2. **follows** the prefix with a watch from `R + 1`, turning each event
//!    into the registry's own mutations (`writer.rs`), so logins, lists and
//!    Authorize stay local reads that never wait on etcd;
//! 3. **writes** each change as one etcd transaction (or a few, for changes
//!    that touch many tokens) whose compare conditions hold the rules for
//!    the whole cluster: the name absent, the user's count unchanged since
//!    the state the change was checked against. A create's id comes from a
//!    block of ids the node leased from the id counter (`ids.rs`), so
//!    nodes creating for different users share no key. A transaction that
//!    loses a race is not an error: the node catches up to etcd's revision
//!    and checks the change again, which then refuses it with the code one
//!    node would give (51, 52, 20…).
//!
//! A change is answered once etcd committed it **and** this node's
//! registry applied it (read-your-writes on the node that answered). A
//! request that times out is answered 20002: its outcome is unknown (it
//! may have committed); a list tells.
//!
//! The key layout and value bytes are `keys.rs`'s. No raw token, password
//! or key is ever written to etcd.

mod ids;
pub mod keys;
mod writer;

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
};

use crate::auth::TokenKey;
use crate::auth::root::{RootError, RootGiven};
use crate::config::EtcdConfig;
use crate::datadir::RootCredentials;
use crate::registry::{LastUsed, Mutation, Replica};
use keys::{Keys, decode_number, decode_token, decode_used, encode_number};

pub use ids::ID_BLOCK_IDS;
pub use writer::start;

/// Tokens written per transaction by an import (3 operations each at most,
/// within etcd's default 128).
const IMPORT_TXN_TOKENS: usize = 32;
/// Keys read per page while listing.
const LIST_PAGE_KEYS: i64 = 1000;
/// Keys per id slice of one user's tokens while loading (see
/// `Cluster::list_by_user`).
const LIST_SLICE_KEYS: u64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd ({endpoints}): {what}: {reason}")]
    Request { endpoints: String, what: &'static str, reason: String },
    #[error(
        "the token-hash key in storage.etcd.key_file differs from the one this cluster's tokens were made \
         with (etcd key {key}); every node needs the same key file"
    )]
    KeyMismatch { key: String },
    #[error("etcd holds a damaged value at {key}: {reason}")]
    Damaged { key: String, reason: String },
    #[error("import refused: {reason}")]
    ImportRefused { reason: String },
    #[error(transparent)]
    Root(#[from] RootError),
}

/// A connection to the cluster, with the key layout and the request bound.
pub struct Cluster {
    client: Client,
    keys: Keys,
    timeout: Duration,
    endpoints: String,
}

/// The registry as etcd held it at one revision.
pub struct Loaded {
    pub state: Replica,
    pub next_id: u64,
    /// The revision the state reflects; the watch starts after it.
    pub revision: i64,
}

impl Cluster {
    /// Connects (bounded by `request_timeout`; the client spreads requests
    /// over every endpoint and fails over between them).
    pub async fn connect(config: &EtcdConfig) -> Result<Cluster, EtcdError> {
        let endpoints = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), config.request_timeout);
        if let (Some(username), Some(password)) = (&config.username, &config.password) {
            options = options.with_user(username.clone(), password.clone());
        }
        if let Some(tls) = tls_options(config)? {
            options = options.with_tls(tls);
        }
        let failed = |what, error: etcd_client::Error| EtcdError::Request {
            endpoints: endpoints.clone(),
            what,
            reason: error.to_string(),
        };
        let client =
            tokio::time::timeout(config.request_timeout, Client::connect(&config.endpoints, Some(options)))
                .await
                .map_err(|_| EtcdError::Request {
                    endpoints: endpoints.clone(),
                    what: "connect",
                    reason: format!("no answer within {:?}", config.request_timeout),
                })?
                .map_err(|error| failed("connect", error))?;
        let cluster =
            Cluster { client, keys: Keys::new(&config.prefix), timeout: config.request_timeout, endpoints };
        Ok(cluster)
    }

    /// Runs `request`, sending it again while the connection to the member
    /// it went to is refused (that member is down, so nothing was sent), up
    /// to the request timeout: a node starts, loads and imports with one
    /// member down as it writes with one.
    async fn send<T, F, Fut>(&self, what: &'static str, request: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.send_again_if(what, never_sent, self.timeout, request).await
    }

    /// [`Cluster::send`] for a request that may safely happen twice (a
    /// read, or a create-if-absent that reads back what is there): sent
    /// again on any transport failure or timeout too (a member that died
    /// mid-request, an election under way), for up to
    /// [`IDEMPOTENT_RETRY_TIMEOUTS`] request timeouts: a node that starts
    /// while etcd elects a leader waits for it instead of exiting.
    async fn send_idempotent<T, F, Fut>(&self, what: &'static str, request: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let again = |error: &etcd_client::Error| never_sent(error) || transport_failed(error);
        self.send_again_if(what, again, self.timeout * IDEMPOTENT_RETRY_TIMEOUTS, request).await
    }

    async fn send_again_if<T, F, Fut>(
        &self,
        what: &'static str,
        again: impl Fn(&etcd_client::Error) -> bool,
        window: Duration,
        mut request: F,
    ) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            match request(self.client.clone()).await {
                Ok(response) => return Ok(response),
                Err(error) if again(&error) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, what, "an etcd member refused the connection; sending again");
                    tokio::time::sleep(UNSENT_RETRY_PAUSE).await;
                }
                Err(error) => return Err(self.failed(what)(error)),
            }
        }
    }

    /// A get (a read: sent again on any transport failure).
    async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
        what: &'static str,
    ) -> Result<etcd_client::GetResponse, EtcdError> {
        let key = key.into();
        self.send_idempotent(what, |mut client| {
            let (key, options) = (key.clone(), options.clone());
            async move { client.get(key, options).await }
        })
        .await
    }

    fn failed(&self, what: &'static str) -> impl Fn(etcd_client::Error) -> EtcdError + '_ {
        move |error| EtcdError::Request { endpoints: self.endpoints.clone(), what, reason: error.to_string() }
    }

    /// Stores `value` at `key` unless the key exists; returns what the key
    /// holds afterwards (ours, or the one that was there first).
    async fn create_if_absent(
        &mut self,
        key: String,
        value: Vec<u8>,
        what: &'static str,
    ) -> Result<Vec<u8>, EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        // Idempotent: sent twice, the second finds the key and reads it back.
        let response = self
            .send_idempotent(what, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return Ok(value);
        }
        let stored = self.get(key.clone(), None, what).await?;
        let kv =
            stored.kvs().first().ok_or_else(|| EtcdError::Damaged { key, reason: "vanished".to_owned() })?;
        Ok(kv.value().to_vec())
    }

    /// Refuses a key that differs from the one the cluster's tokens were
    /// made with; the first node stores the check value.
    pub async fn check_key(&mut self, key: &TokenKey) -> Result<(), EtcdError> {
        let ours = key.check_value();
        let check_key = self.keys.key_check();
        let stored = self.create_if_absent(check_key.clone(), ours.clone().into_bytes(), "key check").await?;
        if stored != ours.as_bytes() {
            return Err(EtcdError::KeyMismatch { key: check_key });
        }
        Ok(())
    }

    /// Root's credentials: the cluster's, or chosen now by this node if it is
    /// the first (create-if-absent, so exactly one node's choice stands).
    pub async fn root(&mut self, given: &RootGiven) -> Result<RootCredentials, EtcdError> {
        given.check()?;
        let key = self.keys.root();
        let parse = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| toml::from_str::<RootCredentials>(text).ok())
                .ok_or_else(|| EtcdError::Damaged {
                    key: key.clone(),
                    reason: "not root credentials".to_owned(),
                })
        };
        let existing = self.get(key.clone(), None, "read root").await?;
        if let Some(kv) = existing.kvs().first() {
            let stored = parse(kv.value())?;
            given.warn_ignored(&stored, "etcd");
            return Ok(stored);
        }
        let chosen = given.choose()?;
        let ours = toml::to_string(&chosen.root).expect("root credentials serialize").into_bytes();
        let stored = self.create_if_absent(key.clone(), ours.clone(), "store root").await?;
        if stored == ours {
            return Ok(chosen.announce());
        }
        let stored = parse(&stored)?;
        given.warn_ignored(&stored, "etcd");
        Ok(stored)
    }

    /// Writes every token of `state` (ids, hashes, times, scopes, networks,
    /// revocations, last uses) into a prefix that holds no token yet, after
    /// moving the id counter past `next_id`. Refuses a prefix with tokens
    /// (an import never merges) and one whose counter is past an imported
    /// id (that id may have been handed out). Returns the tokens written.
    pub async fn import(&mut self, state: &Replica, next_id: u64) -> Result<usize, EtcdError> {
        let count_only = GetOptions::new().with_prefix().with_count_only();
        let existing = self.get(self.keys.tokens(), Some(count_only), "count tokens").await?;
        if existing.count() > 0 {
            return Err(EtcdError::ImportRefused {
                reason: format!(
                    "{} holds {} tokens already; import only into an empty prefix",
                    self.keys.tokens(),
                    existing.count()
                ),
            });
        }
        let records: Vec<_> = state.records().collect();
        let lowest = records.iter().map(|token| token.id).min();
        self.reserve_ids(lowest, next_id).await?;
        let mut counts: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for chunk in records.chunks(IMPORT_TXN_TOKENS) {
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            for token in chunk {
                let name = self.keys.name(token.user_id, &token.name);
                compares.push(Compare::create_revision(name.clone(), CompareOp::Equal, 0));
                ops.push(TxnOp::put(
                    self.keys.token(token.user_id, token.id),
                    keys::encode_token(token),
                    None,
                ));
                ops.push(TxnOp::put(name, encode_number(token.id), None));
                if let Some(used) = token.last_used {
                    ops.push(TxnOp::put(
                        self.keys.used(token.user_id, token.id),
                        keys::encode_used(token.id, used),
                        None,
                    ));
                }
                *counts.entry(token.user_id).or_default() += 1;
            }
            let txn = Txn::new().when(compares).and_then(ops);
            let response = self
                .send("import", |mut client| {
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                })
                .await?;
            if !response.succeeded() {
                return Err(EtcdError::Damaged {
                    key: self.keys.prefix().to_owned(),
                    reason: "a token name appeared during the import; nothing after it was written"
                        .to_owned(),
                });
            }
        }
        let ops: Vec<TxnOp> = counts
            .iter()
            .map(|(user_id, count)| TxnOp::put(self.keys.count(*user_id), encode_number(*count), None))
            .collect();
        for chunk in ops.chunks(IMPORT_TXN_TOKENS) {
            let txn = Txn::new().and_then(chunk.to_vec());
            self.send("import counts", |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        }
        Ok(records.len())
    }

    /// Moves the id counter to at least `next_id` before an import writes a
    /// token, as one compare-and-set, so no node leases a block that holds
    /// an imported id (nodes may run meanwhile). Refused if the counter is
    /// already past `lowest`, the smallest imported id: ids below the
    /// counter may have been handed out (to a token since deleted, or in a
    /// node's block), and an id is never given twice.
    async fn reserve_ids(&mut self, lowest: Option<u64>, next_id: u64) -> Result<(), EtcdError> {
        let key = self.keys.next_id();
        loop {
            let counter = self.get(key.clone(), None, "read id counter").await?;
            let (current, compare) = match counter.kvs().first() {
                Some(kv) => (
                    decode_number(kv.value())
                        .map_err(|reason| EtcdError::Damaged { key: key.clone(), reason })?,
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                ),
                None => (1, Compare::create_revision(key.clone(), CompareOp::Equal, 0)),
            };
            if let Some(lowest) = lowest
                && lowest < current
            {
                return Err(EtcdError::ImportRefused {
                    reason: format!(
                        "this prefix may have handed out ids up to {} already ({key}) and the export holds id \
                         {lowest}; import into a new prefix",
                        current - 1
                    ),
                });
            }
            let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                key.clone(),
                encode_number(current.max(next_id)),
                None,
            )]);
            let response = self
                .send("reserve ids", |mut client| {
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                })
                .await?;
            if response.succeeded() {
                return Ok(());
            }
        }
    }

    /// Lists every token and last use at one revision, in pages.
    pub async fn load(&mut self) -> Result<Loaded, EtcdError> {
        let next_id_key = self.keys.next_id();
        self.create_if_absent(next_id_key.clone(), encode_number(1), "id counter").await?;
        let counter = self.get(next_id_key.clone(), None, "read id counter").await?;
        let revision = counter.header().map_or(0, |header| header.revision());
        let next_id = match counter.kvs().first() {
            Some(kv) => {
                decode_number(kv.value()).map_err(|reason| EtcdError::Damaged { key: next_id_key, reason })?
            }
            None => 1,
        };
        let mut state = Replica::new();
        for (key, value) in self.list_by_user("tokens/", revision, next_id).await? {
            let token =
                decode_token(&value).map_err(|reason| EtcdError::Damaged { key: key.clone(), reason })?;
            state.try_apply(&Mutation::Create(token)).map_err(|reason| EtcdError::Damaged { key, reason })?;
        }
        for (key, value) in self.list_by_user("used/", revision, next_id).await? {
            let used: LastUsed =
                decode_used(&value).map_err(|reason| EtcdError::Damaged { key: key.clone(), reason })?;
            if let keys::Named::Used { user_id, id } = self.keys.parse(key.as_bytes())
                && let Some((hash, _)) = state.by_user_and_id(user_id, id)
            {
                let hash = *hash;
                state
                    .try_apply(&Mutation::Touch { id, hash, used })
                    .map_err(|reason| EtcdError::Damaged { key, reason })?;
            }
        }
        Ok(Loaded { state, next_id, revision })
    }

    /// Every key of `kind` (`tokens/` or `used/`) at `revision`, read in
    /// slices small enough that no request walks the whole keyspace. etcd
    /// 3.4 counts every key of a range to answer a page of it, so paging
    /// through 1M keys from one start to one end costs O(n²) (minutes at
    /// 1M); instead each user's keys (users from `counts/`) are read in id
    /// slices of about [`LIST_SLICE_KEYS`] keys. The keys found are checked
    /// against a count of the whole range; should they differ (a token
    /// without a count, which no writer makes), the plain listing is used.
    async fn list_by_user(
        &mut self,
        kind: &str,
        revision: i64,
        next_id: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let whole = format!("{}{kind}", self.keys.prefix());
        let total = self.count_keys(&whole, revision).await?;
        let mut found = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (key, value) in self.list(self.keys.counts(), revision).await? {
            let keys::Named::Count { user_id } = self.keys.parse(key.as_bytes()) else { continue };
            let tokens = decode_number(&value).map_err(|reason| EtcdError::Damaged { key, reason })?;
            let slices = tokens.div_ceil(LIST_SLICE_KEYS).max(1);
            let width = next_id.div_ceil(slices).max(1);
            let mut low = 0u64;
            while low < next_id {
                let high = low.saturating_add(width).min(next_id);
                let from = self.keys.by_user_from(kind, user_id, low);
                let to = self.keys.by_user_from(kind, user_id, high);
                found.extend(self.list_range(from.into_bytes(), to.into_bytes(), revision).await?);
                low = high;
            }
        }
        if found.len() as i64 == total {
            return Ok(found);
        }
        tracing::warn!(
            kind,
            found = found.len(),
            total,
            "keys outside every user's count; listing the whole range instead (slow with many tokens)"
        );
        self.list(whole, revision).await
    }

    /// How many keys are under `prefix` at `revision` (one walk of the range).
    async fn count_keys(&mut self, prefix: &str, revision: i64) -> Result<i64, EtcdError> {
        let options =
            GetOptions::new().with_range(prefix_end(prefix)).with_count_only().with_revision(revision);
        Ok(self.get(prefix.to_owned(), Some(options), "count").await?.count())
    }

    /// Every key under `prefix` at `revision`, in pages of
    /// [`LIST_PAGE_KEYS`]: for short ranges (each page walks the rest of
    /// the range).
    async fn list(&mut self, prefix: String, revision: i64) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let end = prefix_end(&prefix);
        self.list_range(prefix.into_bytes(), end, revision).await
    }

    /// Every key from `from` up to `end` at `revision`, in pages of
    /// [`LIST_PAGE_KEYS`].
    async fn list_range(
        &mut self,
        mut from: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
    ) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let mut found = Vec::new();
        loop {
            let options =
                GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE_KEYS).with_revision(revision);
            let page = self.get(from.clone(), Some(options), "list").await?;
            for kv in page.kvs() {
                found.push((String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()));
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(found),
            }
        }
    }
}

/// TLS to the members when `tls_ca_file` is set: their CA, the client
/// certificate if any, the name to check.
fn tls_options(config: &EtcdConfig) -> Result<Option<TlsOptions>, EtcdError> {
    let Some(ca_file) = &config.tls_ca_file else { return Ok(None) };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| EtcdError::Request {
            endpoints: config.endpoints.join(","),
            what: "read a TLS file",
            reason: format!("{}: {error}", path.display()),
        })
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca_file)?));
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = &config.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(Some(tls))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Pause before sending again a request a down member refused.
pub(super) const UNSENT_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Whether a failed request never reached etcd: the connection to the
/// member was refused, so nothing was sent and sending again is safe. Read
/// from the error's text (the client reports it as a transport error);
/// anything else may have reached etcd and counts as outcome unknown.
pub(super) fn never_sent(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// Request timeouts an idempotent request keeps being sent for.
const IDEMPOTENT_RETRY_TIMEOUTS: u32 = 6;

/// Whether a request failed in transport or timed out (the connection broke
/// under it, or no leader answered in time; gRPC's "operation was
/// canceled" is what a request gets when the member it went to is killed
/// mid-request): it may or may not have reached etcd.
fn transport_failed(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    TRANSPORT_FAILURE_SIGNS.iter().any(|sign| text.contains(sign))
}

/// What the client's error text says when the transport failed.
const TRANSPORT_FAILURE_SIGNS: [&str; 8] = [
    "transport error",
    "broken pipe",
    "h2 protocol error",
    "Timeout expired",
    "leader changed",
    "no leader",
    "operation was canceled",
    "operation was cancelled",
];

#[cfg(test)]
mod tests {
    use super::{never_sent, transport_failed};

    /// The client's errors are told apart by their text; these are texts
    /// seen from etcd-client 0.21 against etcd 3.4 with members killed.
    #[test]
    fn transport_failures_are_told_from_answers() {
        let error = |text: &str| etcd_client::Error::InvalidArgs(text.to_owned());
        // A start during the chaos crash test: a member killed mid-request.
        let canceled = error(
            "grpc request error: status: 'The operation was cancelled', self: \"operation was canceled\"",
        );
        assert!(transport_failed(&canceled) && !never_sent(&canceled));
        assert!(transport_failed(&error("grpc request error: transport error")));
        assert!(transport_failed(&error("etcdserver: leader changed")));
        assert!(never_sent(&error("transport error: tcp connect error: Connection refused (os error 111)")));
        // etcd's answers are not transport failures: sending again would not help.
        for answer in
            ["etcdserver: requested lease not found", "etcdserver: too many operations in txn request"]
        {
            assert!(!transport_failed(&error(answer)) && !never_sent(&error(answer)), "{answer}");
        }
    }
}
