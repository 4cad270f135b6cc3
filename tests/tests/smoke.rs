//! The shortest end-to-end path: start, log in, create, log in with the token.

use latchkey_sdk::{Client, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

#[tokio::test]
async fn password_login_create_and_token_login() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = Client::connect(server.address).await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
    let token = client.create_personal_access_token("smoke", Expiry::Never).await.unwrap();
    let mut other = Client::connect(server.address).await.unwrap();
    assert_eq!(other.login_with_personal_access_token(&token).await.unwrap(), 0);
    assert_eq!(server.stop().code(), Some(0));
}
