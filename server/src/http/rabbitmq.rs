//! RabbitMQ's HTTP auth backend (`rabbitmq_auth_backend_http`): the four
//! questions the plugin asks, answered `allow` or `deny` in plain text,
//! by GET (query) or POST (form body) as the plugin is configured.
//!
//! - `/v1/rabbitmq/user` (username, password): the password is a token
//!   and the username names it, `<owner>/<token name>`
//!   (`command::check::broker_login`). No tags: a token is no
//!   administrator of the broker.
//! - `/v1/rabbitmq/vhost` (username, vhost, ip): scope `vhost:<vhost>:access`
//!   and the token's networks against `ip`.
//! - `/v1/rabbitmq/resource` (username, vhost, resource, name, permission):
//!   scope `<resource>:<name>:<permission>`, resource one of exchange, queue
//!   or topic, permission one of configure, write, read.
//! - `/v1/rabbitmq/topic` (the same, plus routing_key): scope
//!   `topic:<exchange>:<permission>`; routing keys are not scoped.
//!
//! A vhost or resource name that cannot be written as a scope part (1–64
//! bytes of `A–Z a–z 0–9 . _ -`; the default vhost `/` is one) is matched
//! only by a wildcard grant (`vhost:*:access`) or a full-access token.
//! Every answer is a 200 (the plugin reads anything else as an error); a
//! question missing a field is denied. docs/brokers/rabbitmq.md has the
//! rules, the security argument and the broker's configuration.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use latchkey_protocol::ext::Decision;
use latchkey_protocol::scope;
use zeroize::Zeroizing;

use super::Exchange;
use super::input::{body, decode_form_into};
use super::reply::{Reply, with_type};
use crate::command::check;

/// Which of the plugin's four questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    User,
    Vhost,
    Resource,
    Topic,
}

/// Answers one question.
pub async fn answer(question: Question, request: Request<Incoming>, exchange: &Exchange) -> Reply {
    // The question's fields as sent: the query of a GET, the form body of
    // a POST (read in place by [`Fields::read`]).
    let sent = if request.method() == Method::GET {
        Some(Bytes::copy_from_slice(request.uri().query().unwrap_or("").as_bytes()))
    } else {
        body(request, exchange).await.ok()
    };
    let Some(sent) = sent else {
        return text("deny");
    };
    let Ok(sent) = std::str::from_utf8(&sent) else {
        return text("deny");
    };
    let sent = Fields::read(sent);
    let username = sent.get(Field::Username);
    let ctx = &exchange.ctx;
    let uses = &exchange.uses;
    let decision = match question {
        Question::User => {
            // The broker is the peer, and this question carries no client
            // address: failed logins count against the broker's.
            check::broker_login(username, sent.get(Field::Password), exchange.peer, uses, ctx).await
        }
        Question::Vhost => {
            let address = sent.get(Field::Ip).parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0));
            if address.is_none() {
                tracing::info!(target: "audit", event = "authorize", decision = "network", via = "broker", "a RabbitMQ vhost question without a valid ip was denied");
                crate::metrics::authorize(crate::metrics::Via::Broker, "network");
                return text("deny");
            }
            let required = required_scope("vhost", sent.get(Field::Vhost), "access");
            check::broker_check(username, &required, address, uses, ctx)
        }
        Question::Resource | Question::Topic => {
            let resource = if question == Question::Topic { "topic" } else { sent.get(Field::Resource) };
            let permission = sent.get(Field::Permission);
            let known = matches!(resource, "exchange" | "queue" | "topic")
                && matches!(permission, "configure" | "write" | "read");
            if !known {
                return text("deny");
            }
            let required = required_scope(resource, sent.get(Field::Name), permission);
            check::broker_check(username, &required, None, uses, ctx)
        }
    };
    match decision {
        // `allow` without tags: a token gets no management or policy rights.
        Ok(Decision::Allowed) => text("allow"),
        _ => text("deny"),
    }
}

/// The fields the four questions carry, read in one pass over the query
/// or form (a question is asked for every connection, channel and
/// resource the broker has not cached). Each is as `input::form_field`
/// reads it: the last value given, decoded, and empty when absent or not
/// UTF-8 once decoded. Fields a question does not use are read and ignored.
/// A value without escapes is read where it was sent; the ones with
/// escapes (RabbitMQ's usernames always, the default vhost `/`) are decoded
/// one after another into one buffer, wiped when dropped: one allocation
/// per question at most.
struct Fields<'a> {
    sent: &'a str,
    decoded: Zeroizing<Vec<u8>>,
    spans: [Span; Field::COUNT],
}

/// Where a field's value is, as byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    Absent,
    /// In the text sent (no escapes).
    Sent(usize, usize),
    /// In [`Fields::decoded`] (valid UTF-8).
    Decoded(usize, usize),
}

/// The fields a question may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Username,
    Password,
    Vhost,
    Ip,
    Resource,
    Name,
    Permission,
}

impl Field {
    const COUNT: usize = 7;

    fn named(key: &[u8]) -> Option<Field> {
        Some(match key {
            b"username" => Field::Username,
            b"password" => Field::Password,
            b"vhost" => Field::Vhost,
            b"ip" => Field::Ip,
            b"resource" => Field::Resource,
            b"name" => Field::Name,
            b"permission" => Field::Permission,
            _ => return None,
        })
    }
}

impl<'a> Fields<'a> {
    fn read(sent: &'a str) -> Fields<'a> {
        let bytes = sent.as_bytes();
        let mut fields =
            Fields { sent, decoded: Zeroizing::new(Vec::new()), spans: [Span::Absent; Field::COUNT] };
        // One pass over the bytes: `split('&')`'s pieces (the empty text's
        // one empty piece included), each split at its first `=`, noting
        // whether its value (not its key) has anything to decode.
        let mut start = 0;
        let mut equals = None;
        let mut escaped = false;
        for at in 0..=bytes.len() {
            match bytes.get(at) {
                Some(b'=') if equals.is_none() => equals = Some(at),
                Some(b'%' | b'+') if equals.is_some() => escaped = true,
                Some(b'&') | None => {
                    let (key_end, value_start) = equals.map_or((at, at), |equals| (equals, equals + 1));
                    if let Some(field) = Field::named(&bytes[start..key_end]) {
                        fields.spans[field as usize] = fields.span(value_start, at, escaped);
                    }
                    (start, equals, escaped) = (at + 1, None, false);
                }
                Some(_) => {}
            }
        }
        fields
    }

    /// The span of the value sent at `start..end`, decoded if it is
    /// `escaped`.
    fn span(&mut self, start: usize, end: usize, escaped: bool) -> Span {
        if !escaped {
            return Span::Sent(start, end);
        }
        let from = self.decoded.len();
        decode_form_into(&self.sent.as_bytes()[start..end], &mut self.decoded);
        if std::str::from_utf8(&self.decoded[from..]).is_ok() {
            Span::Decoded(from, self.decoded.len())
        } else {
            self.decoded.truncate(from);
            Span::Absent
        }
    }

    fn get(&self, field: Field) -> &str {
        match self.spans[field as usize] {
            Span::Absent => "",
            Span::Sent(start, end) => self.sent.get(start..end).unwrap_or(""),
            Span::Decoded(start, end) => {
                self.decoded.get(start..end).and_then(|value| std::str::from_utf8(value).ok()).unwrap_or("")
            }
        }
    }
}

/// The scope a question needs: `<kind>:<name>:<action>`, or with a name
/// that no scope can spell, `<kind>:*:<action>`, which only a wildcard
/// grant covers.
fn required_scope(kind: &str, name: &str, action: &str) -> String {
    debug_assert!(scope::valid_part(kind) && scope::valid_part(action), "{kind}, {action}");
    // The kinds and actions asked are valid parts, so the scope is valid
    // exactly when the name is (`validate_required`'s rule, which the test
    // below holds this to), and it is built in one allocation.
    let name = if scope::valid_part(name) { name } else { scope::WILDCARD };
    [kind, ":", name, ":", action].concat()
}

fn text(answer: &'static str) -> Reply {
    with_type(StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(answer.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::{Field, Fields, required_scope};
    use crate::http::input::form_field;

    /// Every field, with the name it is sent under.
    const NAMED: [(Field, &str); Field::COUNT] = [
        (Field::Username, "username"),
        (Field::Password, "password"),
        (Field::Vhost, "vhost"),
        (Field::Ip, "ip"),
        (Field::Resource, "resource"),
        (Field::Name, "name"),
        (Field::Permission, "permission"),
    ];

    #[test]
    fn fields_are_read_as_form_field_reads_each() {
        let forms = [
            "username=iggy%2Forders&password=lk_a%2Bb&vhost=%2F&ip=10.0.0.1",
            "username=iggy%2Fq&vhost=%2F&resource=exchange&name=amq.gen-Xa_1&permission=write&routing_key=a.b",
            "name=first&name=second&username=a+b&resource&permission=",
            "username=%FF&vhost=ok&vhost=%C3%28&ip=::1&unknown=1&&=x&name%3D=y",
            "",
            "username",
        ];
        for form in forms {
            let fields = Fields::read(form);
            for (field, name) in NAMED {
                assert_eq!(
                    fields.get(field),
                    &*form_field(form, name).unwrap_or_default(),
                    "{name} in {form:?}"
                );
            }
        }
        let fields = Fields::read("name=first&name=second&username=iggy%2Fq&vhost=%FF");
        let read = (fields.get(Field::Name), fields.get(Field::Username), fields.get(Field::Vhost));
        assert_eq!(read, ("second", "iggy/q", ""));
        // Escaped values share one buffer; a value that is not UTF-8 once
        // decoded leaves nothing in it.
        let fields = Fields::read("username=a%2Fb&vhost=%C3%28&name=%2F&ip=1");
        assert_eq!(&fields.decoded[..], b"a/b/");
        assert_eq!((fields.get(Field::Vhost), fields.get(Field::Name)), ("", "/"));
    }

    proptest::proptest! {
        /// Any form over the bytes that matter (the separators, escapes
        /// whole and broken, the field names) is read as `form_field`
        /// reads each field.
        #[test]
        fn any_form_is_read_as_form_field_reads_it(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "username", "password", "vhost", "ip", "resource", "name", "permission",
                    "=", "&", "%", "%2F", "%2f", "%C3", "%A9", "%FF", "%4", "+", "a", "/", "é", "",
                ]),
                0..24,
            )
        ) {
            let form = parts.concat();
            let fields = Fields::read(&form);
            for (field, name) in NAMED {
                proptest::prop_assert_eq!(fields.get(field), &*form_field(&form, name).unwrap_or_default());
            }
        }
    }

    #[test]
    fn names_a_scope_cannot_spell_need_a_wildcard_grant() {
        assert_eq!(required_scope("exchange", "orders", "write"), "exchange:orders:write");
        assert_eq!(required_scope("queue", "amq.gen-Xa_1", "read"), "queue:amq.gen-Xa_1:read");
        assert_eq!(required_scope("vhost", "/", "access"), "vhost:*:access");
        assert_eq!(required_scope("queue", "a:b", "read"), "queue:*:read");
        assert_eq!(required_scope("queue", "", "read"), "queue:*:read");
        assert_eq!(required_scope("queue", &"q".repeat(65), "read"), "queue:*:read");
        // What a wildcard-only name needs, and who has it.
        let required = required_scope("vhost", "/", "access");
        assert!(latchkey_protocol::scope::allows(&["vhost:*:access"], &required));
        assert!(!latchkey_protocol::scope::allows(&["vhost:prod:access"], &required));
        assert!(latchkey_protocol::scope::allows::<&str>(&[], &required));
        // The same rule as validating the whole scope, for names of every kind.
        let names = ["orders", "a.b_c-9", "", "*", "a:b", "a b", "é", "/", &"q".repeat(64), &"q".repeat(65)];
        for kind in ["vhost", "exchange", "queue", "topic"] {
            for action in ["access", "configure", "write", "read"] {
                for name in names {
                    let whole = format!("{kind}:{name}:{action}");
                    let expected = if latchkey_protocol::scope::validate_required(&whole).is_ok() {
                        whole
                    } else {
                        format!("{kind}:*:{action}")
                    };
                    assert_eq!(required_scope(kind, name, action), expected, "{name:?}");
                }
            }
        }
    }
}
