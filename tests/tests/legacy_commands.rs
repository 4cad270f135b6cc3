//! Every served command's happy path over real TCP (spec §1.2–§1.5), with the
//! exact reply bytes where the spec pins them.

mod common;

use std::time::Duration;

use common::*;
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, IdentityInfo, PersonalAccessTokens, decode_exact,
};
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};

#[tokio::test]
async fn ping_is_served_before_and_after_login_as_eight_zero_bytes() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    // Spec §1.10: request 04 00 00 00 01 00 00 00, reply eight zero bytes.
    raw.write(&[4, 0, 0, 0, 1, 0, 0, 0]).await;
    assert_eq!(raw.read_reply().await, (0, Vec::new()));
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    assert_eq!(raw.call(PING, &[]).await, (0, Vec::new()));

    let mut client = connect(server.address).await;
    client.ping().await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    client.ping().await.unwrap();
}

#[tokio::test]
async fn login_user_for_root_matches_the_worked_example() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    // Spec §1.10, byte for byte.
    let request: Vec<u8> = vec![
        0x1c, 0, 0, 0, 0x26, 0, 0, 0, 4, b'i', b'g', b'g', b'y', 4, b'i', b'g', b'g', b'y', 6, 0, 0, 0, b'0',
        b'.', b'1', b'0', b'.', b'0', 0, 0, 0, 0,
    ];
    raw.write(&request).await;
    let mut reply = [0u8; 12];
    tokio::time::timeout(HANG_GUARD, tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, [0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);

    // The SDK agrees: root is user 0.
    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
}

#[tokio::test]
async fn login_user_accepts_a_body_without_version_and_context() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    let mut body = short(b"iggy");
    body.extend_from_slice(&short(b"iggy"));
    let (status, payload) = raw.call(LOGIN_USER, &body).await;
    assert_eq!(status, 0);
    assert_eq!(decode_exact::<IdentityInfo>(&payload).unwrap().user_id, 0);
}

#[tokio::test]
async fn get_me_reports_user_tcp_transport_and_the_clients_address() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().config(&users_config(&[TestUser {
        id: 7,
        username: "alice",
        password: "alice-password",
        active: true,
    }]));
    let server = TestServer::start(&home, &spec);

    let mut first = Raw::connect(server.address).await;
    assert_eq!(first.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    let (status, payload) = first.call(GET_ME, &[]).await;
    assert_eq!(status, 0);
    let me = decode_exact::<ClientDetails>(&payload).expect("GetMe reply decodes exactly");
    assert_eq!(me.user_id, 0);
    assert_eq!(me.transport, 1, "transport 1 = TCP");
    assert_eq!(me.address, first.stream.local_addr().unwrap().to_string());
    assert!(me.consumer_groups.is_empty());

    let mut second = Raw::connect(server.address).await;
    assert_eq!(second.status(LOGIN_USER, &login_body(b"alice", b"alice-password")).await, 0);
    let (status, payload) = second.call(GET_ME, &[]).await;
    assert_eq!(status, 0);
    let other = decode_exact::<ClientDetails>(&payload).unwrap();
    assert_eq!(other.user_id, 7);
    assert_eq!(other.address, second.stream.local_addr().unwrap().to_string());
    assert_ne!(other.client_id, me.client_id, "client ids are per connection");

    // Through the SDK too.
    let mut client = root(server.address).await;
    let details = client.get_me().await.unwrap();
    assert_eq!((details.user_id, details.transport), (0, 1));
}

#[tokio::test]
async fn get_me_and_cluster_metadata_over_ipv6() {
    if !latchkey_tests::ipv6_loopback_or_skip() {
        return;
    }
    let home = DataHome::new();
    // IPv6 works here (checked above), so a failed start is a failure.
    let server = TestServer::start(&home, &ServerSpec::default_root().address("[::1]:0"));
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    let (status, payload) = raw.call(GET_ME, &[]).await;
    assert_eq!(status, 0);
    let me = decode_exact::<ClientDetails>(&payload).unwrap();
    assert_eq!(me.address, raw.stream.local_addr().unwrap().to_string());
    let (status, payload) = raw.call(GET_CLUSTER_METADATA, &[]).await;
    assert_eq!(status, 0);
    let metadata = decode_exact::<ClusterMetadata>(&payload).unwrap();
    assert_eq!(metadata.nodes[0].ip, "::1");
    assert_eq!(metadata.nodes[0].tcp_port, server.address.port());
}

#[tokio::test]
async fn cluster_metadata_is_one_healthy_leader_on_the_servers_port() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    let (status, payload) = raw.call(GET_CLUSTER_METADATA, &[]).await;
    assert_eq!(status, 0);
    let metadata = decode_exact::<ClusterMetadata>(&payload).expect("roster decodes exactly");
    assert_eq!(metadata.nodes.len(), 1);
    let node = &metadata.nodes[0];
    assert_eq!(node.role, 0, "leader");
    assert_eq!(node.status, 0, "healthy");
    assert_eq!(node.tcp_port, server.address.port());
    assert_eq!(node.ip, server.address.ip().to_string());

    let mut client = root(server.address).await;
    assert_eq!(client.get_cluster_metadata().await.unwrap(), metadata);
}

#[tokio::test]
async fn an_empty_token_list_is_status_0_length_0() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    raw.write(&frame(GET_PATS, &[])).await;
    let mut reply = [0xffu8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut reply).await.unwrap();
    assert_eq!(reply, [0u8; 8]);
    // And nothing else follows: the next reply is the ping's.
    assert_eq!(raw.call(PING, &[]).await, (0, Vec::new()));
}

#[tokio::test]
async fn create_replies_with_a_52_character_lk_token_in_a_wire_name() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    let (status, payload) = raw.call(CREATE_PAT, &create_body(b"tok-1h", 3_600_000_000)).await;
    assert_eq!(status, 0);
    assert_eq!(payload.len(), 53, "[len u8 = 52][52 token bytes]");
    assert_eq!(payload[0], 52);
    let token = std::str::from_utf8(&payload[1..]).unwrap().to_owned();
    assert_token_shape(&token);

    // Two creates never mint the same token.
    let (status, other) = raw.call(CREATE_PAT, &create_body(b"tok-2", 0)).await;
    assert_eq!(status, 0);
    assert_ne!(&other[1..], token.as_bytes());

    let mut fresh = connect(server.address).await;
    assert_eq!(fresh.login_with_personal_access_token(&token).await.unwrap(), 0);
}

#[tokio::test]
async fn list_is_sorted_by_name_with_absolute_expiries() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    let hour = Duration::from_secs(3600);
    let before = now_us();
    client.create_personal_access_token("charlie", Expiry::After(hour)).await.unwrap();
    let after = now_us();
    client.create_personal_access_token("alpha", Expiry::Never).await.unwrap();
    client.create_personal_access_token("bravo", Expiry::ServerDefault).await.unwrap();
    client.create_personal_access_token("delta", Expiry::After(Duration::from_secs(60))).await.unwrap();

    // The SDK sorts client-side, so read the wire order directly.
    let payload = client.send_raw(GET_PATS, &[]).await.unwrap();
    let entries = decode_exact::<PersonalAccessTokens>(&payload).unwrap().0;
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo", "charlie", "delta"]);
    // Never (u64::MAX) and server default (0) both list as 0 on the wire.
    assert_eq!(&payload[..6], b"\x05alpha");
    assert_eq!(&payload[6..14], &[0u8; 8]);
    assert_eq!(&payload[14..20], b"\x05bravo");
    assert_eq!(&payload[20..28], &[0u8; 8]);
    assert_eq!(entries[0].expiry_at_us, None);
    assert_eq!(entries[1].expiry_at_us, None);

    // Absolute µs: creation time + 1 h, within a couple of seconds of the
    // client's clock around the create.
    let charlie = entries[2].expiry_at_us.expect("1 h token has an expiry");
    let slack = 2_000_000;
    let hour_us = hour.as_micros() as u64;
    assert!(
        charlie + slack >= before + hour_us && charlie <= after + hour_us + slack,
        "expiry_at {charlie} not within now + 1 h (created between {before} and {after})"
    );
    let delta = entries[3].expiry_at_us.expect("60 s token has an expiry");
    assert!(delta < charlie, "a 60 s token expires before a 1 h one");

    assert_eq!(client.get_personal_access_tokens().await.unwrap(), entries);
}

#[tokio::test]
async fn delete_removes_the_token_and_frees_its_name() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    let token = client.create_personal_access_token("short-lived", Expiry::Never).await.unwrap();
    let keep = client.create_personal_access_token("keeper", Expiry::Never).await.unwrap();

    // Raw: the delete reply is an empty OK.
    let payload = client.send_raw(DELETE_PAT, &short(b"short-lived")).await.unwrap();
    assert!(payload.is_empty());

    let names: Vec<String> =
        client.get_personal_access_tokens().await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["keeper"]);
    let mut fresh = connect(server.address).await;
    assert_eq!(status(fresh.login_with_personal_access_token(&token).await), 20);
    assert_eq!(fresh.login_with_personal_access_token(&keep).await.unwrap(), 0);

    // The name is free again, with a new token.
    let again = client.create_personal_access_token("short-lived", Expiry::Never).await.unwrap();
    assert_ne!(again, token);
    assert_eq!(status(fresh.login_with_personal_access_token(&token).await), 20);
    assert_eq!(fresh.login_with_personal_access_token(&again).await.unwrap(), 0);
}

#[tokio::test]
async fn token_login_returns_the_owners_id() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().config(&users_config(&[TestUser {
        id: 42,
        username: "carol",
        password: "carol-password",
        active: true,
    }]));
    let server = TestServer::start(&home, &spec);
    let mut root_client = root(server.address).await;
    let root_token = root_client.create_personal_access_token("root-token", Expiry::Never).await.unwrap();
    let mut carol = connect(server.address).await;
    assert_eq!(carol.login_user("carol", "carol-password").await.unwrap(), 42);
    let carol_token = carol.create_personal_access_token("carol-token", Expiry::Never).await.unwrap();

    let mut raw = Raw::connect(server.address).await;
    let (status, payload) = raw.call(LOGIN_WITH_PAT, &short(carol_token.as_bytes())).await;
    assert_eq!((status, payload), (0, 42u32.to_le_bytes().to_vec()));
    let (status, payload) = raw.call(LOGIN_WITH_PAT, &short(root_token.as_bytes())).await;
    assert_eq!((status, payload), (0, 0u32.to_le_bytes().to_vec()));
}

#[tokio::test]
async fn logout_is_an_empty_ok_and_ends_the_session() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    assert_eq!(raw.call(LOGOUT_USER, &[]).await, (0, Vec::new()));
    assert_eq!(raw.status(GET_ME, &[]).await, 40);
    assert_eq!(raw.status(PING, &[]).await, 0);
}

/// A burst of pipelined token creates and deletes is queued with the writer
/// at once (one commit for all of them), yet every reply is what the same
/// requests sent one by one would get, in order (`common`'s
/// `pipelined_burst_answers_in_order`).
#[tokio::test]
async fn pipelined_creates_and_deletes_answer_as_if_sent_one_by_one() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    pipelined_burst_answers_in_order(server.address).await;
}
