//! Which handler answers which method and path, in one table ([`Route`]).
//!
//! The OpenAPI document (`openapi.json`) describes the same table; a test
//! checks every route is in it and routes to itself.

use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use latchkey_protocol::ErrorCode;

use super::Exchange;
use super::console;
use super::rabbitmq::Question;
use super::reply::{ApiError, Reply};
use crate::metrics::{self, HttpRoute};

/// Every route: its method and path pattern (`{id}` is a token id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Healthz,
    Readyz,
    OpenApi,
    Me,
    CreateToken,
    ListTokens,
    DeleteAllTokens,
    RevokeAllTokens,
    GetToken,
    UpdateToken,
    DeleteToken,
    RevokeToken,
    RotateToken,
    /// A token's scopes and networks: add, remove, clear.
    EditTokenAccess,
    Introspect,
    /// Any method, and any path below it.
    AuthCheck,
    /// RabbitMQ's four questions, GET or POST.
    Rabbit(Question),
    Backup,
    /// The web console's page (`/`) and files (`/console/{file}`).
    ConsolePage,
    ConsoleFile,
    /// The console's browser session: sign in, who am I, sign out.
    SignIn,
    CurrentSession,
    SignOut,
}

#[cfg(test)]
impl Route {
    pub const ALL: &'static [Route] = &[
        Route::Metrics,
        Route::Healthz,
        Route::Readyz,
        Route::OpenApi,
        Route::Me,
        Route::CreateToken,
        Route::ListTokens,
        Route::DeleteAllTokens,
        Route::RevokeAllTokens,
        Route::GetToken,
        Route::UpdateToken,
        Route::DeleteToken,
        Route::RevokeToken,
        Route::RotateToken,
        Route::EditTokenAccess,
        Route::Introspect,
        Route::AuthCheck,
        Route::Rabbit(Question::User),
        Route::Rabbit(Question::Vhost),
        Route::Rabbit(Question::Resource),
        Route::Rabbit(Question::Topic),
        Route::Backup,
        Route::ConsolePage,
        Route::ConsoleFile,
        Route::SignIn,
        Route::CurrentSession,
        Route::SignOut,
    ];

    /// The method (`None`: any) and the path pattern.
    pub fn pattern(self) -> (Option<Method>, &'static str) {
        match self {
            Route::Metrics => (Some(Method::GET), "/metrics"),
            Route::Healthz => (Some(Method::GET), "/healthz"),
            Route::Readyz => (Some(Method::GET), "/readyz"),
            Route::OpenApi => (Some(Method::GET), "/v1/openapi.json"),
            Route::Me => (Some(Method::GET), "/v1/me"),
            Route::CreateToken => (Some(Method::POST), "/v1/tokens"),
            Route::ListTokens => (Some(Method::GET), "/v1/tokens"),
            Route::DeleteAllTokens => (Some(Method::DELETE), "/v1/tokens"),
            Route::RevokeAllTokens => (Some(Method::POST), "/v1/tokens/revoke-all"),
            Route::GetToken => (Some(Method::GET), "/v1/tokens/{id}"),
            Route::UpdateToken => (Some(Method::PATCH), "/v1/tokens/{id}"),
            Route::DeleteToken => (Some(Method::DELETE), "/v1/tokens/{id}"),
            Route::RevokeToken => (Some(Method::POST), "/v1/tokens/{id}/revoke"),
            Route::RotateToken => (Some(Method::POST), "/v1/tokens/{id}/rotate"),
            Route::EditTokenAccess => (Some(Method::PATCH), "/v1/tokens/{id}/access"),
            Route::Introspect => (Some(Method::POST), "/v1/introspect"),
            Route::AuthCheck => (None, "/v1/auth/check"),
            Route::Rabbit(Question::User) => (Some(Method::POST), "/v1/rabbitmq/user"),
            Route::Rabbit(Question::Vhost) => (Some(Method::POST), "/v1/rabbitmq/vhost"),
            Route::Rabbit(Question::Resource) => (Some(Method::POST), "/v1/rabbitmq/resource"),
            Route::Rabbit(Question::Topic) => (Some(Method::POST), "/v1/rabbitmq/topic"),
            Route::Backup => (Some(Method::POST), "/v1/admin/backup"),
            Route::ConsolePage => (Some(Method::GET), "/"),
            Route::ConsoleFile => (Some(Method::GET), "/console/{file}"),
            Route::SignIn => (Some(Method::POST), "/v1/session"),
            Route::CurrentSession => (Some(Method::GET), "/v1/session"),
            Route::SignOut => (Some(Method::DELETE), "/v1/session"),
        }
    }
}

/// What a path resolved to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    Found(Route, Option<u64>),
    /// The path exists, with these methods only.
    WrongMethod(&'static str),
    NotFound,
    /// A `{id}` that is no token id.
    BadId,
}

/// The most `/`-separated segments a route's path has (`/v1/tokens/{id}/access`).
const ROUTE_SEGMENTS_MAX: usize = 4;

/// Finds the route for `method` and `path`.
pub fn resolve(method: &Method, path: &str) -> Resolved {
    if path == "/v1/auth/check" || path.starts_with("/v1/auth/check/") {
        return Resolved::Found(Route::AuthCheck, None);
    }
    let by_method = |choices: &[(Method, Route)], allow: &'static str, id: Option<u64>| {
        choices
            .iter()
            .find(|(wanted, _)| wanted == method)
            .map_or(Resolved::WrongMethod(allow), |(_, route)| Resolved::Found(*route, id))
    };
    // RabbitMQ's four questions, the other routes asked in bulk, by their
    // prefix too: splitting the path was most of this function's cost.
    if let Some(rest) = path.strip_prefix("/v1/rabbitmq/") {
        let Some(question) = Question::named(rest) else {
            return Resolved::NotFound;
        };
        let route = Route::Rabbit(question);
        return by_method(&[(Method::GET, route), (Method::POST, route)], "GET, POST", None);
    }
    // No route has more than four segments: a longer path is no route, and
    // the segments fit on the stack (this runs for every request).
    let mut segments = [""; ROUTE_SEGMENTS_MAX];
    let mut count = 0;
    for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
        let Some(slot) = segments.get_mut(count) else {
            return Resolved::NotFound;
        };
        *slot = segment;
        count += 1;
    }
    let segments = &segments[..count];
    match segments {
        [""] => by_method(&[(Method::GET, Route::ConsolePage)], "GET", None),
        ["console", _] => by_method(&[(Method::GET, Route::ConsoleFile)], "GET", None),
        ["v1", "session"] => by_method(
            &[
                (Method::GET, Route::CurrentSession),
                (Method::POST, Route::SignIn),
                (Method::DELETE, Route::SignOut),
            ],
            "GET, POST, DELETE",
            None,
        ),
        ["metrics"] => by_method(&[(Method::GET, Route::Metrics)], "GET", None),
        ["healthz"] => by_method(&[(Method::GET, Route::Healthz)], "GET", None),
        ["readyz"] => by_method(&[(Method::GET, Route::Readyz)], "GET", None),
        ["v1", "openapi.json"] => by_method(&[(Method::GET, Route::OpenApi)], "GET", None),
        ["v1", "me"] => by_method(&[(Method::GET, Route::Me)], "GET", None),
        ["v1", "introspect"] => by_method(&[(Method::POST, Route::Introspect)], "POST", None),
        ["v1", "admin", "backup"] => by_method(&[(Method::POST, Route::Backup)], "POST", None),
        ["v1", "tokens"] => by_method(
            &[
                (Method::GET, Route::ListTokens),
                (Method::POST, Route::CreateToken),
                (Method::DELETE, Route::DeleteAllTokens),
            ],
            "GET, POST, DELETE",
            None,
        ),
        ["v1", "tokens", "revoke-all"] => by_method(&[(Method::POST, Route::RevokeAllTokens)], "POST", None),
        ["v1", "tokens", id] => match id.parse::<u64>() {
            Ok(id) => by_method(
                &[
                    (Method::GET, Route::GetToken),
                    (Method::PATCH, Route::UpdateToken),
                    (Method::DELETE, Route::DeleteToken),
                ],
                "GET, PATCH, DELETE",
                Some(id),
            ),
            Err(_) => Resolved::BadId,
        },
        ["v1", "tokens", id, action @ ("revoke" | "rotate")] => match id.parse::<u64>() {
            Ok(id) => {
                let route = if *action == "revoke" { Route::RevokeToken } else { Route::RotateToken };
                by_method(&[(Method::POST, route)], "POST", Some(id))
            }
            Err(_) => Resolved::BadId,
        },
        ["v1", "tokens", id, "access"] => match id.parse::<u64>() {
            Ok(id) => by_method(&[(Method::PATCH, Route::EditTokenAccess)], "PATCH", Some(id)),
            Err(_) => Resolved::BadId,
        },
        _ => Resolved::NotFound,
    }
}

impl Route {
    /// The route's label in `latchkey_http_*` metrics (a closed set).
    fn metric(self) -> HttpRoute {
        match self {
            Route::Metrics => HttpRoute::Metrics,
            Route::Healthz => HttpRoute::Healthz,
            Route::Readyz => HttpRoute::Readyz,
            Route::OpenApi => HttpRoute::OpenApi,
            Route::Me => HttpRoute::Me,
            Route::CreateToken | Route::ListTokens | Route::DeleteAllTokens => HttpRoute::Tokens,
            Route::GetToken | Route::UpdateToken | Route::DeleteToken => HttpRoute::Token,
            Route::RevokeAllTokens => HttpRoute::RevokeAll,
            Route::RevokeToken => HttpRoute::TokenRevoke,
            Route::RotateToken => HttpRoute::TokenRotate,
            Route::EditTokenAccess => HttpRoute::TokenAccess,
            Route::Introspect => HttpRoute::Introspect,
            Route::AuthCheck => HttpRoute::AuthCheck,
            Route::Rabbit(_) => HttpRoute::Rabbitmq,
            Route::Backup => HttpRoute::Backup,
            Route::ConsolePage | Route::ConsoleFile => HttpRoute::Console,
            Route::SignIn | Route::CurrentSession | Route::SignOut => HttpRoute::Session,
        }
    }
}

/// Answers one request, and counts it in the metrics by route and status.
pub async fn respond(request: Request<Incoming>, exchange: &Exchange) -> Reply {
    let started = crate::clock::Stamp::now();
    let resolved = resolve(request.method(), request.uri().path());
    let route = match &resolved {
        Resolved::Found(route, _) => route.metric(),
        _ => HttpRoute::NotFound,
    };
    let to_a_machine = matches!(resolved, Resolved::Found(Route::Rabbit(_), _));
    // The console asks with its CSRF header (empty before sign-in) or its
    // cookie: a 401 for it must not make the browser ask for a password.
    // RabbitMQ's answers are never a 401, so their headers are not looked at.
    let headers = request.headers();
    let from_console = !to_a_machine
        && !headers.contains_key(AUTHORIZATION)
        && (headers.contains_key(console::sessions::CSRF_HEADER)
            || console::sessions::session_cookie(headers).is_some());
    let check = matches!(resolved, Resolved::Found(Route::AuthCheck, _));
    let mut reply = match resolved {
        // RabbitMQ's questions go straight to their handler (`dispatch`
        // routes them the same way): two async layers fewer between hyper
        // and the answer, each of which would hold and move the request.
        Resolved::Found(Route::Rabbit(question), _) => {
            super::rabbitmq::answer(question, request, exchange).await
        }
        resolved => answer(resolved, request, exchange).await,
    };
    if from_console {
        reply.headers_mut().remove(WWW_AUTHENTICATE);
    }
    // A browser never sees RabbitMQ's answers (only the broker asks) nor a
    // forward-auth allow (the proxy passes on only the headers it is told
    // to, to the upstream): the browser-only headers would be a third of
    // each such reply's bytes for nothing. A forward-auth deny may be shown
    // to the browser (Traefik returns it as it is), so it keeps them.
    if !(to_a_machine || check && reply.status() == StatusCode::OK) {
        console::secure(&mut reply);
    }
    metrics::http_request(route, reply.status().as_u16(), crate::clock::since(started));
    reply
}

async fn answer(resolved: Resolved, request: Request<Incoming>, exchange: &Exchange) -> Reply {
    match resolved {
        Resolved::Found(route, id) => match dispatch(route, id, request, exchange).await {
            Ok(reply) => reply,
            Err(error) => error.into_reply(),
        },
        Resolved::WrongMethod(allow) => {
            let mut reply = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::InvalidCommand,
                "method not allowed here",
            )
            .into_reply();
            reply.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            reply
        }
        Resolved::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::InvalidCommand, "no such route").into_reply()
        }
        Resolved::BadId => ApiError::invalid("a token id is a whole number").into_reply(),
    }
}

/// Runs the route's handler. The answers machines ask for in bulk (forward
/// auth, RabbitMQ's questions) are awaited in place; every other handler's
/// future is boxed, so that this future, which hyper moves into place for
/// every request, is the size of the small ones rather than of the largest
/// REST handler (a once-per-call allocation on routes that log in).
async fn dispatch(
    route: Route,
    id: Option<u64>,
    request: Request<Incoming>,
    exchange: &Exchange,
) -> Result<Reply, ApiError> {
    use super::{check, probes, rest};
    let id = || id.ok_or_else(|| ApiError::invalid("missing token id"));
    match route {
        Route::AuthCheck => Ok(check::forward(request, exchange).await),
        Route::Rabbit(question) => Ok(super::rabbitmq::answer(question, request, exchange).await),
        Route::ConsolePage | Route::ConsoleFile => console::page(request.uri(), exchange),
        Route::Metrics => Box::pin(probes::metrics(exchange)).await,
        Route::Healthz => Ok(probes::healthz()),
        Route::Readyz => Ok(probes::readyz(exchange)),
        Route::OpenApi => Ok(probes::openapi()),
        Route::SignIn => Box::pin(console::sessions::sign_in(request, exchange)).await,
        Route::CurrentSession => Box::pin(console::sessions::current(request, exchange)).await,
        Route::SignOut => Box::pin(console::sessions::sign_out(request, exchange)).await,
        Route::Backup => Box::pin(super::admin::backup(request, exchange)).await,
        Route::Introspect => Box::pin(check::introspect(request, exchange)).await,
        Route::Me => Box::pin(rest::me(request, exchange)).await,
        Route::CreateToken => Box::pin(rest::create(request, exchange)).await,
        Route::ListTokens => Box::pin(rest::list(request, exchange)).await,
        Route::DeleteAllTokens => Box::pin(rest::delete_all(request, exchange)).await,
        Route::RevokeAllTokens => Box::pin(rest::revoke_all(request, exchange)).await,
        Route::GetToken => Box::pin(rest::get(id()?, request, exchange)).await,
        Route::UpdateToken => Box::pin(rest::update(id()?, request, exchange)).await,
        Route::DeleteToken => Box::pin(rest::delete(id()?, request, exchange)).await,
        Route::RevokeToken => Box::pin(rest::revoke(id()?, request, exchange)).await,
        Route::RotateToken => Box::pin(rest::rotate(id()?, request, exchange)).await,
        Route::EditTokenAccess => Box::pin(rest::edit_access(id()?, request, exchange)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concrete(pattern: &str) -> String {
        pattern.replace("{id}", "7").replace("{file}", "app.js")
    }

    #[test]
    fn every_route_resolves_to_itself() {
        for &route in Route::ALL {
            let (method, pattern) = route.pattern();
            let method = method.unwrap_or(Method::PUT);
            let id = pattern.contains("{id}").then_some(7);
            assert_eq!(resolve(&method, &concrete(pattern)), Resolved::Found(route, id), "{route:?}");
        }
    }

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let document: serde_json::Value = serde_json::from_str(super::super::probes::OPENAPI).unwrap();
        let paths = document["paths"].as_object().expect("paths");
        for &route in Route::ALL {
            let (method, pattern) = route.pattern();
            let item = paths.get(pattern).unwrap_or_else(|| panic!("{pattern} missing from openapi.json"));
            let method = method.map_or("get".to_owned(), |method| method.as_str().to_lowercase());
            assert!(item.get(&method).is_some(), "{method} {pattern} missing from openapi.json");
        }
        // And nothing documented that is not served.
        for (pattern, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let method: Method = method.to_uppercase().parse().unwrap();
                let resolved = resolve(&method, &concrete(pattern));
                assert!(
                    matches!(resolved, Resolved::Found(..)),
                    "{method} {pattern} documented but not served"
                );
            }
        }
    }

    #[test]
    fn wrong_methods_and_unknown_paths() {
        assert_eq!(resolve(&Method::PUT, "/v1/tokens"), Resolved::WrongMethod("GET, POST, DELETE"));
        assert_eq!(resolve(&Method::GET, "/v1/tokens/revoke-all"), Resolved::WrongMethod("POST"));
        assert_eq!(resolve(&Method::GET, "/v1/tokens/abc"), Resolved::BadId);
        assert_eq!(resolve(&Method::GET, "/v1/tokens/1/frobnicate"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/v1/tokens/1/access"), Resolved::WrongMethod("PATCH"));
        assert_eq!(resolve(&Method::PATCH, "/v1/tokens/one/access"), Resolved::BadId);
        assert_eq!(resolve(&Method::GET, "/nope"), Resolved::NotFound);
        assert_eq!(resolve(&Method::GET, "/v1/tokens/"), Resolved::BadId);
        assert_eq!(
            resolve(&Method::DELETE, "/v1/auth/check/any/path"),
            Resolved::Found(Route::AuthCheck, None)
        );
        assert_eq!(resolve(&Method::GET, "/v1/auth/checkered"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/"), Resolved::WrongMethod("GET"));
        assert_eq!(resolve(&Method::GET, "/console/a/b"), Resolved::NotFound);
        // Past the longest route's four segments: no route, whatever the start.
        assert_eq!(resolve(&Method::PATCH, "/v1/tokens/1/access/x"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/v1/rabbitmq/user/x"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/v1/rabbitmq/user/"), Resolved::NotFound);
        // RabbitMQ's questions are resolved by their prefix, before the
        // path is split.
        for (segment, question) in [
            ("user", Question::User),
            ("vhost", Question::Vhost),
            ("resource", Question::Resource),
            ("topic", Question::Topic),
        ] {
            let path = format!("/v1/rabbitmq/{segment}");
            for method in [Method::GET, Method::POST] {
                assert_eq!(resolve(&method, &path), Resolved::Found(Route::Rabbit(question), None));
            }
            assert_eq!(resolve(&Method::PUT, &path), Resolved::WrongMethod("GET, POST"));
        }
        assert_eq!(resolve(&Method::POST, "/v1/rabbitmq/queue"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/v1/rabbitmq/"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/v1/rabbitmq"), Resolved::NotFound);
        assert_eq!(resolve(&Method::POST, "/v1/rabbitmqx/user"), Resolved::NotFound);
        assert_eq!(resolve(&Method::GET, "/a/b/c/d/e/f/g/h"), Resolved::NotFound);
        assert_eq!(resolve(&Method::PUT, "/v1/session"), Resolved::WrongMethod("GET, POST, DELETE"));
    }
}
