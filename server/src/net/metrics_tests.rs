//! The TCP loop's metrics: every request timed under its command, the
//! connection counted as open while it is. Here rather than in `metrics/`,
//! which must not know the layers that record into it.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::render;
use crate::registry::{Readers, RegistryPublisher, Replica};

/// A [`Context`](crate::command::Context) with root only, an empty registry
/// and a writer that never runs: enough for commands that change nothing.
/// The registry's publisher must outlive every read.
fn bare_context() -> (crate::command::Context, RegistryPublisher) {
    use crate::auth::passwords::PasswordVerifier;
    use crate::auth::policy::TokenPolicy;
    use crate::auth::throttle::LoginThrottle;
    use crate::auth::users::{Users, hash_password};
    use crate::auth::{Auth, TokenKey};
    use crate::config::{LoginThrottleConfig, PersonalAccessTokenConfig};
    use crate::datadir::RootCredentials;

    let root = RootCredentials { username: "iggy".into(), password_hash: hash_password("root-password") };
    let auth = Auth::new(
        Users::new(&root, &[]).unwrap(),
        TokenPolicy::from_config(&PersonalAccessTokenConfig::default()),
        PasswordVerifier::new(1, 8),
        LoginThrottle::new(&LoginThrottleConfig::default()),
        TokenKey::new([7; 32]),
    );
    let (registry, publisher) = Readers::new(Replica::new(), Replica::new());
    let (writer, _inbox) = crate::store::writer::channel();
    let ctx = crate::command::Context {
        auth,
        registry,
        uses: crate::registry::UseLedger::default(),
        writer,
        freshness: Arc::new(crate::store::Freshness::always()),
        local_addr: "127.0.0.1:8090".parse().unwrap(),
    };
    (ctx, publisher)
}

/// The value of the sample `series` (name and labels as rendered).
fn scraped(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|line| line.rsplit_once(' ').is_some_and(|(name, _)| name == series));
    line.unwrap_or_else(|| panic!("no {series}")).rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// The legacy loop, over real TCP: each request counts under its command
/// (one decoded before login is refused but still named; an unknown code is
/// `invalid`), and the connection counts as open while it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_loop_times_every_request_under_its_command() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::net::{ConnectionLimits, Connections, connection};

    let (ctx, _publisher) = bare_context();
    let ctx = Arc::new(ctx);
    let limits = ConnectionLimits {
        max_connections: 8,
        max_connections_per_ip: 8,
        login_timeout: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        max_requests_in_flight: 16,
        max_frame_size: 1024,
        vsr_size_max: 4096,
    };
    let connections = Arc::new(Connections::new(limits, crate::config::Framing::Auto, None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = {
        let (ctx, connections) = (Arc::clone(&ctx), Arc::clone(&connections));
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            connection::serve(stream, peer, &connections, &ctx).await;
        })
    };
    let count = |text: &str, command: &str| {
        scraped(text, &format!("latchkey_request_duration_seconds_count{{command=\"{command}\"}}"))
    };
    let open = |text: &str| scraped(text, "latchkey_connections_open{framing=\"legacy\"}");
    let before = render(&ctx.registry);

    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    let frame = |code: u32| [4u32.to_le_bytes(), code.to_le_bytes()].concat();
    // Three pings, GetMe before login (40), and a code nobody defines (3), in one burst.
    let burst = [frame(1), frame(1), frame(1), frame(20), frame(99_999)].concat();
    client.write_all(&burst).await.unwrap();
    let mut replies = [0u8; 5 * 8];
    client.read_exact(&mut replies).await.unwrap();
    let statuses: Vec<u32> =
        replies.chunks(8).map(|reply| u32::from_le_bytes(reply[..4].try_into().unwrap())).collect();
    assert_eq!(statuses, [0, 0, 0, 40, 3]);
    let during = render(&ctx.registry);
    drop(client);
    server.await.unwrap();
    let after = render(&ctx.registry);

    assert_eq!(count(&after, "ping") - count(&before, "ping"), 3.0);
    assert_eq!(count(&after, "get_me") - count(&before, "get_me"), 1.0);
    assert_eq!(count(&after, "invalid") - count(&before, "invalid"), 1.0);
    assert_eq!(open(&during) - open(&before), 1.0);
    assert_eq!(open(&after), open(&before));
}
