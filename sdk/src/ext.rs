//! Latchkey's extension commands (codes 9100–9199): the full token lifecycle
//! and Authorize. These work against Latchkey only; an Iggy server answers
//! them with InvalidCommand (3).

use std::time::Duration;

use latchkey_protocol::ext::{
    ACCESS_EDITS_MAX, Authorize, Count, CreateToken, DeleteAllTokens, DeleteToken, EditTokenAccess, GetToken,
    ListTokens, RevokeAllTokens, RevokeToken, RotateToken, UpdateToken,
};
pub use latchkey_protocol::ext::{
    AccessEdit, AuthorizeDecision, Decision, IssuedToken, StatusFilter, TokenDetails, TokenPage,
    TokenSelector, TokenStatus,
};

use latchkey_protocol::Secret;

use crate::{Client, Error, Expiry, decode, wire_name};

/// What a new token should be. Built with [`NewToken::named`] and the
/// `with_*` methods; everything but the name is optional.
///
/// ```
/// use latchkey_sdk::{Expiry, NewToken};
/// use std::time::Duration;
///
/// let token = NewToken::named("orders-writer")
///     .with_description("the orders service in production")
///     .with_expiry(Expiry::After(Duration::from_secs(30 * 86_400)))
///     .with_scope("stream:orders:write")
///     .with_network("10.0.0.0/8");
/// assert_eq!(token.scopes, ["stream:orders:write"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub description: String,
    pub expiry: Expiry,
    /// No scopes: full access.
    pub scopes: Vec<String>,
    /// No networks: usable from any address.
    pub networks: Vec<String>,
}

impl NewToken {
    pub fn named(name: impl Into<String>) -> NewToken {
        NewToken {
            name: name.into(),
            description: String::new(),
            expiry: Expiry::ServerDefault,
            scopes: Vec::new(),
            networks: Vec::new(),
        }
    }

    pub fn with_description(mut self, description: impl Into<String>) -> NewToken {
        self.description = description.into();
        self
    }

    pub fn with_expiry(mut self, expiry: Expiry) -> NewToken {
        self.expiry = expiry;
        self
    }

    /// A built-in scope (`tokens:read`, `tokens:write`, `me:read`,
    /// `authorize`) or a resource scope `<type>:<id or *>:<action or *>`.
    pub fn with_scope(mut self, scope: impl Into<String>) -> NewToken {
        self.scopes.push(scope.into());
        self
    }

    /// An address or CIDR network, IPv4 or IPv6.
    pub fn with_network(mut self, network: impl Into<String>) -> NewToken {
        self.networks.push(network.into());
        self
    }
}

/// A rotated token's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateExpiry {
    /// Keep the current expiry.
    Keep,
    /// Never expire (refused when the server has a maximum lifetime).
    Never,
    /// Expire this long after the rotation.
    After(Duration),
}

impl RotateExpiry {
    fn as_wire_us(self) -> u64 {
        match self {
            RotateExpiry::Keep => latchkey_protocol::ext::EXPIRY_KEEP,
            RotateExpiry::Never => latchkey_protocol::ext::EXPIRY_NEVER,
            RotateExpiry::After(duration) => Expiry::After(duration).as_wire_us(),
        }
    }
}

fn list8(items: &[String], what: &str) -> Result<Vec<String>, Error> {
    if items.len() > latchkey_protocol::ext::LIST8_ITEMS_MAX {
        return Err(Error::Protocol(format!("at most 255 {what}")));
    }
    items.iter().map(|item| wire_name(item, what)).collect()
}

fn text16(text: &str, what: &str) -> Result<String, Error> {
    if text.len() > usize::from(u16::MAX) {
        return Err(Error::Protocol(format!("{what} must be at most 65535 bytes")));
    }
    Ok(text.to_owned())
}

fn text8(text: &str, what: &str) -> Result<String, Error> {
    if text.len() > 255 {
        return Err(Error::Protocol(format!("{what} must be at most 255 bytes")));
    }
    Ok(text.to_owned())
}

fn selector(token: TokenSelector) -> Result<TokenSelector, Error> {
    match token {
        TokenSelector::Name(name) => Ok(TokenSelector::Name(wire_name(&name, "name")?)),
        id => Ok(id),
    }
}

impl Client {
    /// Creates a token (code 9100). The reply is the only time its secret
    /// is ever sent; `IssuedToken::token` is wiped from memory when dropped
    /// (read it with `as_str()`).
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::NewToken;
    /// let issued = client.create_token(&NewToken::named("ci").with_scope("tokens:read")).await?;
    /// println!("token {} (id {}) expires at {}", issued.token.expose(), issued.id, issued.expires_at_us);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_token(&mut self, token: &NewToken) -> Result<IssuedToken, Error> {
        let request = CreateToken {
            name: wire_name(&token.name, "name")?,
            description: text16(&token.description, "description")?,
            expiry_us: token.expiry.as_wire_us(),
            scopes: list8(&token.scopes, "scopes")?,
            networks: list8(&token.networks, "networks")?,
        };
        decode(&self.call(&request).await?)
    }

    /// One of the caller's tokens by id or name (code 9101).
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// let by_name = client.get_token("ci").await?;
    /// let by_id = client.get_token(by_name.id).await?;
    /// assert_eq!(by_name, by_id);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_token(&mut self, token: impl Into<TokenSelector>) -> Result<TokenDetails, Error> {
        decode(&self.call(&GetToken { token: selector(token.into())? }).await?)
    }

    /// One page of the caller's tokens in id order (code 9102): those after
    /// `after_id` (0 = from the start), at most `limit` (0 = the server's
    /// page maximum, 1000). Pass the reply's `next_after_id` to get the next
    /// page; it is 0 on the last one.
    pub async fn list_tokens(
        &mut self,
        filter: StatusFilter,
        after_id: u64,
        limit: u32,
    ) -> Result<TokenPage, Error> {
        decode(&self.call(&ListTokens { filter, after_id, limit }).await?)
    }

    /// Every token of the caller that passes `filter`, all pages.
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::StatusFilter;
    /// for token in client.list_all_tokens(StatusFilter::Revoked).await? {
    ///     println!("{} was revoked at {}", token.name, token.revoked_at_us);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_all_tokens(&mut self, filter: StatusFilter) -> Result<Vec<TokenDetails>, Error> {
        let mut tokens = Vec::new();
        let mut after_id = 0;
        loop {
            let page = self.list_tokens(filter, after_id, 0).await?;
            tokens.extend(page.tokens);
            if page.next_after_id == 0 {
                return Ok(tokens);
            }
            after_id = page.next_after_id;
        }
    }

    /// Renames a token and/or changes its description (code 9103); `None`
    /// leaves a field as it is.
    pub async fn update_token(
        &mut self,
        token: impl Into<TokenSelector>,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), Error> {
        let request = UpdateToken {
            token: selector(token.into())?,
            name: name.map(|name| wire_name(name, "name")).transpose()?,
            description: description.map(|text| text16(text, "description")).transpose()?,
        };
        self.call(&request).await.map(drop)
    }

    /// Revokes a token (code 9104): it stays listed, with its revoke time,
    /// and can no longer log in or pass Authorize.
    pub async fn revoke_token(&mut self, token: impl Into<TokenSelector>) -> Result<(), Error> {
        self.call(&RevokeToken { token: selector(token.into())? }).await.map(drop)
    }

    /// A new secret for the same token (code 9105); the old one fails at once.
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::RotateExpiry;
    /// let fresh = client.rotate_token("ci", RotateExpiry::Keep).await?;
    /// println!("new secret: {}", fresh.token.expose());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rotate_token(
        &mut self,
        token: impl Into<TokenSelector>,
        expiry: RotateExpiry,
    ) -> Result<IssuedToken, Error> {
        self.rotate(token.into(), expiry, false).await
    }

    /// A new secret for a token that may be revoked or expired (code 9105
    /// with the reactivate flag): it is active again, with the same id,
    /// name, description, scopes and networks; the old secret stays refused.
    /// An expired token needs a new lifetime ([`RotateExpiry::Keep`] is
    /// refused with 54). On an active token this is a rotate.
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::RotateExpiry;
    /// use std::time::Duration;
    /// let back = client.reactivate_token("ci", RotateExpiry::After(Duration::from_secs(30 * 86_400))).await?;
    /// println!("active again, new secret: {}", back.token.expose());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reactivate_token(
        &mut self,
        token: impl Into<TokenSelector>,
        expiry: RotateExpiry,
    ) -> Result<IssuedToken, Error> {
        self.rotate(token.into(), expiry, true).await
    }

    async fn rotate(
        &mut self,
        token: TokenSelector,
        expiry: RotateExpiry,
        reactivate: bool,
    ) -> Result<IssuedToken, Error> {
        let request = RotateToken { token: selector(token)?, expiry_us: expiry.as_wire_us(), reactivate };
        decode(&self.call(&request).await?)
    }

    /// Edits a token's scopes and networks (code 9109): the edits apply in
    /// order, as one change. A token with no scopes has full access, and one
    /// with no networks may be used from anywhere. Sessions that logged in
    /// with the token end.
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::AccessEdit;
    /// client
    ///     .edit_token_access(
    ///         "ci",
    ///         [
    ///             AccessEdit::AddScope("stream:payments:read".into()),
    ///             AccessEdit::RemoveScope("tokens:read".into()),
    ///             AccessEdit::ClearNetworks,
    ///         ],
    ///     )
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn edit_token_access(
        &mut self,
        token: impl Into<TokenSelector>,
        edits: impl IntoIterator<Item = AccessEdit>,
    ) -> Result<(), Error> {
        let edits = edits
            .into_iter()
            .map(|edit| match edit {
                AccessEdit::AddScope(item) => wire_name(&item, "scope").map(AccessEdit::AddScope),
                AccessEdit::RemoveScope(item) => wire_name(&item, "scope").map(AccessEdit::RemoveScope),
                AccessEdit::AddNetwork(item) => wire_name(&item, "network").map(AccessEdit::AddNetwork),
                AccessEdit::RemoveNetwork(item) => wire_name(&item, "network").map(AccessEdit::RemoveNetwork),
                clear => Ok(clear),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if edits.len() > ACCESS_EDITS_MAX {
            return Err(Error::Protocol(format!("at most {ACCESS_EDITS_MAX} access edits in one request")));
        }
        self.call(&EditTokenAccess { token: selector(token.into())?, edits }).await.map(drop)
    }

    /// Deletes a token by id or name (code 9106).
    pub async fn delete_token(&mut self, token: impl Into<TokenSelector>) -> Result<(), Error> {
        self.call(&DeleteToken { token: selector(token.into())? }).await.map(drop)
    }

    /// Revokes every active token of the caller (code 9107); returns how many.
    pub async fn revoke_all_tokens(&mut self) -> Result<u32, Error> {
        Ok(decode::<Count>(&self.call(&RevokeAllTokens).await?)?.count)
    }

    /// Deletes every token of the caller (code 9108); returns how many.
    pub async fn delete_all_tokens(&mut self) -> Result<u32, Error> {
        Ok(decode::<Count>(&self.call(&DeleteAllTokens).await?)?.count)
    }

    /// Asks whether `token` may do `scope` from `address` (code 9110). For
    /// brokers that use Latchkey as their authentication sidecar; the caller
    /// needs the `authorize` permission. An empty `scope` checks the token
    /// only; `address` is the broker's client (`ip` or `ip:port`), `None`
    /// if unknown.
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client, presented: &str) -> Result<(), latchkey_sdk::Error> {
    /// let answer = client.authorize(presented, "stream:orders:write", Some("10.1.2.3:50000")).await?;
    /// if answer.allowed() {
    ///     println!("user {} ({}) may write", answer.username, answer.user_id);
    /// } else {
    ///     println!("denied: {}", answer.decision.as_str());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn authorize(
        &mut self,
        token: &str,
        scope: &str,
        address: Option<&str>,
    ) -> Result<AuthorizeDecision, Error> {
        let request = Authorize {
            token: Secret::from(wire_name(token, "token")?),
            scope: text8(scope, "scope")?.into(),
            address: text8(address.unwrap_or(""), "address")?.into(),
        };
        decode(&self.call(&request).await?)
    }
}
