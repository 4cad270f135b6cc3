//! The label values, each a closed enum: a label can only take the values
//! listed here, so every family has a fixed number of series whatever the
//! traffic. No label names a user, a token or an address.

use latchkey_protocol::{ErrorCode, Request};

/// Defines a label enum: its variants with their exposition values, `ALL`
/// (every value, in index order), `COUNT`, `as_str` and `index`.
macro_rules! labels {
    ($(#[$doc:meta])* pub enum $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const COUNT: usize = Self::ALL.len();

            /// The label value as exposed.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value's place in `ALL`, for indexing a shard's arrays.
            #[inline]
            pub(super) const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labels! {
    /// How a login proves who it is (`method` on logins, `kind` on throttle refusals).
    pub enum LoginMethod {
        Password = "password",
        Token = "token",
    }
}

labels! {
    /// How a login ended (`result`), from the code it answered.
    pub enum LoginResult {
        Ok = "ok",
        /// Wrong password, or no such token (unknown, deleted, malformed).
        Failed = "failed",
        /// A username or password outside its length bounds: no check ran.
        Invalid = "invalid",
        Expired = "expired",
        Revoked = "revoked",
        /// The right credentials of an inactive user.
        Inactive = "inactive",
        /// A token used from outside its networks.
        Network = "network",
        /// Refused by the failed-login throttle before any check.
        Throttled = "throttled",
        /// The registry may be stale (cluster mode): token checks fail closed.
        Unavailable = "unavailable",
        /// Any other code.
        Error = "error",
    }
}

impl LoginResult {
    /// The result of a login that answered `outcome`.
    pub fn of<T>(outcome: &Result<T, ErrorCode>) -> LoginResult {
        match outcome {
            Ok(_) => LoginResult::Ok,
            Err(code) => LoginResult::from_code(*code),
        }
    }

    /// The result of a login refused with `code`.
    pub fn from_code(code: ErrorCode) -> LoginResult {
        match code {
            ErrorCode::InvalidCredentials
            | ErrorCode::ResourceNotFound
            | ErrorCode::InvalidPersonalAccessToken => LoginResult::Failed,
            ErrorCode::InvalidUsername | ErrorCode::InvalidPassword => LoginResult::Invalid,
            ErrorCode::PersonalAccessTokenExpired => LoginResult::Expired,
            ErrorCode::PersonalAccessTokenRevoked => LoginResult::Revoked,
            ErrorCode::UserInactive => LoginResult::Inactive,
            ErrorCode::AddressNotAllowed => LoginResult::Network,
            ErrorCode::TooManyFailedLogins => LoginResult::Throttled,
            ErrorCode::StorageUnavailable => LoginResult::Unavailable,
            _ => LoginResult::Error,
        }
    }
}

labels! {
    /// Which front door a request came in by (`via`).
    pub enum Via {
        Tcp = "tcp",
        Http = "http",
        /// A broker's auth hook (RabbitMQ's HTTP backend).
        Broker = "broker",
    }
}

labels! {
    /// What an Authorize said (`decision`): the protocol's decisions, and
    /// the refusals that come before one.
    pub enum AuthorizeOutcome {
        Allowed = "allowed",
        Unknown = "unknown",
        Expired = "expired",
        Revoked = "revoked",
        Scope = "scope",
        Network = "network",
        InactiveUser = "inactive_user",
        Throttled = "throttled",
        Unavailable = "unavailable",
        Error = "error",
        /// A decision string this build does not know.
        Other = "other",
    }
}

impl AuthorizeOutcome {
    /// `decision` as `Decision::as_str` or the caller spells it; anything
    /// else is `Other`, so a new decision never adds a series by itself.
    pub fn of_decision(decision: &str) -> AuthorizeOutcome {
        match decision {
            "allowed" => AuthorizeOutcome::Allowed,
            "unknown" => AuthorizeOutcome::Unknown,
            "expired" => AuthorizeOutcome::Expired,
            "revoked" => AuthorizeOutcome::Revoked,
            "scope" => AuthorizeOutcome::Scope,
            "network" => AuthorizeOutcome::Network,
            "inactive_user" => AuthorizeOutcome::InactiveUser,
            "throttled" => AuthorizeOutcome::Throttled,
            "unavailable" => AuthorizeOutcome::Unavailable,
            "error" => AuthorizeOutcome::Error,
            _ => AuthorizeOutcome::Other,
        }
    }
}

labels! {
    /// A TCP request's command (`command`): one value per [`Request`]
    /// variant, named after it in snake case, and `invalid` for a frame
    /// that decoded to no request.
    pub enum CommandLabel {
        Ping = "ping",
        GetClusterMetadata = "get_cluster_metadata",
        GetMe = "get_me",
        LoginUser = "login_user",
        LogoutUser = "logout_user",
        GetPersonalAccessTokens = "get_personal_access_tokens",
        CreatePersonalAccessToken = "create_personal_access_token",
        DeletePersonalAccessToken = "delete_personal_access_token",
        LoginWithPersonalAccessToken = "login_with_personal_access_token",
        /// An Iggy command Latchkey does not serve.
        Unserved = "unserved",
        CreateToken = "create_token",
        GetToken = "get_token",
        ListTokens = "list_tokens",
        UpdateToken = "update_token",
        RevokeToken = "revoke_token",
        RotateToken = "rotate_token",
        DeleteToken = "delete_token",
        RevokeAllTokens = "revoke_all_tokens",
        DeleteAllTokens = "delete_all_tokens",
        EditTokenAccess = "edit_token_access",
        Authorize = "authorize",
        /// An unknown code, a body that does not decode, a broken 0.11 login.
        Invalid = "invalid",
    }
}

impl CommandLabel {
    /// The label of `request`: a match on its variant, nothing more.
    #[inline]
    pub fn of(request: &Request) -> CommandLabel {
        match request {
            Request::Ping => CommandLabel::Ping,
            Request::GetClusterMetadata => CommandLabel::GetClusterMetadata,
            Request::GetMe => CommandLabel::GetMe,
            Request::LoginUser(_) => CommandLabel::LoginUser,
            Request::LogoutUser => CommandLabel::LogoutUser,
            Request::GetPersonalAccessTokens => CommandLabel::GetPersonalAccessTokens,
            Request::CreatePersonalAccessToken(_) => CommandLabel::CreatePersonalAccessToken,
            Request::DeletePersonalAccessToken(_) => CommandLabel::DeletePersonalAccessToken,
            Request::LoginWithPersonalAccessToken(_) => CommandLabel::LoginWithPersonalAccessToken,
            Request::Unserved(_) => CommandLabel::Unserved,
            Request::CreateToken(_) => CommandLabel::CreateToken,
            Request::GetToken(_) => CommandLabel::GetToken,
            Request::ListTokens(_) => CommandLabel::ListTokens,
            Request::UpdateToken(_) => CommandLabel::UpdateToken,
            Request::RevokeToken(_) => CommandLabel::RevokeToken,
            Request::RotateToken(_) => CommandLabel::RotateToken,
            Request::DeleteToken(_) => CommandLabel::DeleteToken,
            Request::RevokeAllTokens => CommandLabel::RevokeAllTokens,
            Request::DeleteAllTokens => CommandLabel::DeleteAllTokens,
            Request::EditTokenAccess(_) => CommandLabel::EditTokenAccess,
            Request::Authorize(_) => CommandLabel::Authorize,
        }
    }
}

labels! {
    /// An HTTP route (`route`), `not_found` for any path none matched.
    pub enum HttpRoute {
        Metrics = "metrics",
        Healthz = "healthz",
        Readyz = "readyz",
        Me = "me",
        Tokens = "tokens",
        Token = "token",
        TokenRevoke = "token_revoke",
        TokenRotate = "token_rotate",
        TokenAccess = "token_access",
        RevokeAll = "revoke_all",
        OpenApi = "openapi",
        AuthCheck = "auth_check",
        Introspect = "introspect",
        Rabbitmq = "rabbitmq",
        Backup = "backup",
        Console = "console",
        Session = "session",
        NotFound = "not_found",
    }
}

labels! {
    /// An HTTP status code's class (`code`).
    pub enum StatusClass {
        Success = "2xx",
        Redirection = "3xx",
        ClientError = "4xx",
        ServerError = "5xx",
    }
}

impl StatusClass {
    /// The class of `status`; below 300 counts as 2xx (no 1xx is a final
    /// answer here), 500 and up as 5xx.
    #[inline]
    pub fn of(status: u16) -> StatusClass {
        match status {
            ..300 => StatusClass::Success,
            300..400 => StatusClass::Redirection,
            400..500 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

labels! {
    /// A connection's framing once decided (`framing`).
    pub enum ConnKind {
        Legacy = "legacy",
        Vsr = "vsr",
        Http = "http",
    }
}

labels! {
    /// Why the acceptor turned a connection away (`reason`).
    pub enum RefusedReason {
        /// `[tcp] max_connections` reached.
        Total = "total",
        /// `[tcp] max_connections_per_ip` reached for the client's address key.
        PerAddress = "per_address",
    }
}
