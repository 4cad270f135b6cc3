//! Latchkey's extension commands end to end (codes 9100–9110): create with
//! description, scopes and networks; get, list, update, revoke, rotate,
//! delete; the all-token commands; Authorize.

mod common;

use common::*;
use latchkey_sdk::{Decision, Expiry, NewToken, RotateExpiry, StatusFilter, TokenStatus};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

#[tokio::test]
async fn the_whole_lifecycle_of_one_token() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = connect(server.address).await;
    root.login_user("iggy", "iggy").await.unwrap();
    let new = NewToken::named("ci-deploy")
        .with_description("deploys from CI")
        .with_expiry(Expiry::Never)
        .with_scope("stream:orders:*")
        .with_scope("tokens:read")
        .with_network("127.0.0.0/8");
    let issued = root.create_token(&new).await.unwrap();
    assert!(issued.token.starts_with("lk_"));
    assert_eq!(issued.expires_at_us, 0);

    let details = root.get_token("ci-deploy").await.unwrap();
    assert_eq!(details.id, issued.id);
    assert_eq!(details.description, "deploys from CI");
    assert_eq!(details.status, TokenStatus::Active);
    assert_eq!(details.scopes, ["stream:orders:*", "tokens:read"]);
    assert_eq!(details.networks, ["127.0.0.0/8"]);
    assert_eq!(root.get_token(issued.id).await.unwrap(), details);

    // Authorize: allowed for a covered scope, denied for another.
    let answer = root.authorize(&issued.token, "stream:orders:write", Some("127.0.0.1:4000")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    assert_eq!((answer.user_id, answer.username.as_str(), answer.token_id), (0, "iggy", issued.id));
    let answer = root.authorize(&issued.token, "stream:payments:write", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Scope);
    let answer = root.authorize(&issued.token, "stream:orders:read", Some("10.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Network);

    // A token session may read tokens but not write (scope tokens:read only).
    let mut scoped = connect(server.address).await;
    assert_eq!(scoped.login_with_personal_access_token(&issued.token).await.unwrap(), 0);
    assert_eq!(scoped.list_all_tokens(StatusFilter::All).await.unwrap().len(), 1);
    assert_eq!(status(scoped.create_personal_access_token("more", Expiry::Never).await), 20005);
    assert_eq!(status(scoped.get_me().await), 20005);

    // Update, then rotate: the old secret fails at once, the session ends.
    root.update_token(issued.id, Some("ci-deploy-2"), Some("renamed")).await.unwrap();
    let rotated = root.rotate_token("ci-deploy-2", RotateExpiry::Keep).await.unwrap();
    assert_eq!(rotated.id, issued.id);
    assert_ne!(rotated.token, issued.token);
    assert_eq!(status(connect(server.address).await.login_with_personal_access_token(&issued.token).await), 20);
    assert_eq!(status(scoped.list_tokens(StatusFilter::All, 0, 0).await), 40);
    let answer = root.authorize(&rotated.token, "", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);

    // Revoke keeps it listed; it can no longer log in.
    root.revoke_token(issued.id).await.unwrap();
    let revoked = root.list_all_tokens(StatusFilter::Revoked).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_ne!(revoked[0].revoked_at_us, 0);
    assert!(root.list_all_tokens(StatusFilter::Active).await.unwrap().is_empty());
    assert_eq!(status(connect(server.address).await.login_with_personal_access_token(&rotated.token).await), 20003);
    let answer = root.authorize(&rotated.token, "", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Revoked);

    root.create_token(&NewToken::named("second")).await.unwrap();
    assert_eq!(root.revoke_all_tokens().await.unwrap(), 1);
    assert_eq!(root.delete_all_tokens().await.unwrap(), 2);
    assert!(root.list_all_tokens(StatusFilter::All).await.unwrap().is_empty());
}
