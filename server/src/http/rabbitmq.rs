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

use arrayvec::ArrayString;
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

impl Question {
    /// The question a path's last segment names (`/v1/rabbitmq/<it>`).
    pub fn named(segment: &str) -> Option<Question> {
        Some(match segment {
            "user" => Question::User,
            "vhost" => Question::Vhost,
            "resource" => Question::Resource,
            "topic" => Question::Topic,
            _ => return None,
        })
    }
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
            let required = required_scope(Kind::Vhost, sent.get(Field::Vhost), Action::Access);
            check::broker_check(username, &required, address, uses, ctx)
        }
        Question::Resource | Question::Topic => {
            let kind = if question == Question::Topic {
                Some(Kind::Topic)
            } else {
                Kind::named(sent.get(Field::Resource))
            };
            let (Some(kind), Some(action)) = (kind, Action::named(sent.get(Field::Permission))) else {
                return text("deny");
            };
            let required = required_scope(kind, sent.get(Field::Name), action);
            check::broker_check(username, &required, None, uses, ctx)
        }
    };
    match decision {
        // `allow` without tags: a token gets no management or policy rights.
        Ok(Decision::Allowed) => text("allow"),
        _ => text("deny"),
    }
}

/// The fields the four questions carry, read in place from the query or
/// form (a question is asked for every connection, channel and resource
/// the broker has not cached). Each is as `input::form_field`
/// reads it: the last value given, decoded, and empty when absent or not
/// UTF-8 once decoded. Fields a question does not use are read and ignored.
/// A value without escapes is read where it was sent; the ones with
/// escapes (RabbitMQ's usernames always, the default vhost `/`) are decoded
/// one after another into one buffer, wiped when dropped: one allocation
/// per question at most, never grown.
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
        // `split('&')`'s pieces (the empty text's one empty piece included),
        // each split at its first `=`; a known field's value is then looked
        // through for anything to decode. Each step scans for one byte,
        // which was quicker here than one pass choosing among four bytes at
        // each (BENCHMARKS.md, RabbitMQ, session 15), and took no more
        // instructions than `memchr`'s SIMD search on values this short
        // (session 17).
        let mut start = 0;
        loop {
            let end =
                bytes[start..].iter().position(|&byte| byte == b'&').map_or(bytes.len(), |at| start + at);
            let piece = &bytes[start..end];
            let (key, value_start) = match piece.iter().position(|&byte| byte == b'=') {
                Some(at) => (&piece[..at], start + at + 1),
                None => (piece, end),
            };
            if let Some(field) = Field::named(key) {
                let escaped = bytes[value_start..end].iter().any(|&byte| byte == b'%' || byte == b'+');
                fields.spans[field as usize] = fields.span(value_start, end, escaped);
            }
            if end == bytes.len() {
                return fields;
            }
            start = end + 1;
        }
    }

    /// The span of the value sent at `start..end`, decoded if it is
    /// `escaped`.
    fn span(&mut self, start: usize, end: usize, escaped: bool) -> Span {
        if !escaped {
            return Span::Sent(start, end);
        }
        if self.decoded.capacity() == 0 {
            // Decoding never lengthens a value, so what is left of the text
            // from here bounds every value still to decode: one allocation,
            // and no reallocation that would leave a decoded copy (a
            // username, or a password) unwiped in freed memory.
            self.decoded.reserve_exact(self.sent.len() - start);
        }
        // Held by the reservation above: nothing ever reallocates.
        debug_assert!(self.decoded.len() + (end - start) <= self.decoded.capacity());
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

/// What a question is about: the first part of the scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vhost,
    Exchange,
    Queue,
    Topic,
}

impl Kind {
    /// The longest [`Kind::as_str`].
    const BYTES_MAX: usize = 8;

    /// A resource question's `resource` field.
    fn named(resource: &str) -> Option<Kind> {
        Some(match resource {
            "exchange" => Kind::Exchange,
            "queue" => Kind::Queue,
            "topic" => Kind::Topic,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Vhost => "vhost",
            Kind::Exchange => "exchange",
            Kind::Queue => "queue",
            Kind::Topic => "topic",
        }
    }
}

/// What a question asks to do: the last part of the scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Access,
    Configure,
    Write,
    Read,
}

impl Action {
    /// The longest [`Action::as_str`].
    const BYTES_MAX: usize = 9;

    /// A resource or topic question's `permission` field (`access` is
    /// the vhost question's own, never asked for).
    fn named(permission: &str) -> Option<Action> {
        Some(match permission {
            "configure" => Action::Configure,
            "write" => Action::Write,
            "read" => Action::Read,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Access => "access",
            Action::Configure => "configure",
            Action::Write => "write",
            Action::Read => "read",
        }
    }
}

/// The longest scope a question needs: a kind, a name part, an action and
/// two colons.
const REQUIRED_SCOPE_BYTES: usize = Kind::BYTES_MAX + 1 + scope::SCOPE_PART_BYTES_MAX + 1 + Action::BYTES_MAX;

/// The scope a question needs: `<kind>:<name>:<action>`, or with a name
/// that no scope can spell, `<kind>:*:<action>`, which only a wildcard
/// grant covers. Built on the stack: it is asked for on every question.
fn required_scope(kind: Kind, name: &str, action: Action) -> ArrayString<REQUIRED_SCOPE_BYTES> {
    // The kinds and actions are valid parts, so the scope is valid
    // exactly when the name is (`validate_required`'s rule, which the test
    // below holds this to). A valid name is at most SCOPE_PART_BYTES_MAX
    // bytes, so the whole fits (a test checks every kind and action).
    let name = if scope::valid_part(name) { name } else { scope::WILDCARD };
    let mut required = ArrayString::new();
    for piece in [kind.as_str(), ":", name, ":", action.as_str()] {
        required.push_str(piece);
    }
    required
}

fn text(answer: &'static str) -> Reply {
    with_type(StatusCode::OK, "text/plain; charset=utf-8", Bytes::from_static(answer.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::{Action, Field, Fields, Kind, required_scope};
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
        use Action::*;
        use Kind::*;
        assert_eq!(&required_scope(Exchange, "orders", Write), "exchange:orders:write");
        assert_eq!(&required_scope(Queue, "amq.gen-Xa_1", Read), "queue:amq.gen-Xa_1:read");
        assert_eq!(&required_scope(Vhost, "/", Access), "vhost:*:access");
        assert_eq!(&required_scope(Queue, "a:b", Read), "queue:*:read");
        assert_eq!(&required_scope(Queue, "", Read), "queue:*:read");
        assert_eq!(&required_scope(Queue, &"q".repeat(65), Read), "queue:*:read");
        // What a wildcard-only name needs, and who has it.
        let required = required_scope(Vhost, "/", Access);
        assert!(latchkey_protocol::scope::allows(&["vhost:*:access"], &required));
        assert!(!latchkey_protocol::scope::allows(&["vhost:prod:access"], &required));
        assert!(latchkey_protocol::scope::allows::<&str>(&[], &required));
        // The same rule as validating the whole scope, for names of every
        // kind, the longest a scope part may be among them.
        let longest = "q".repeat(latchkey_protocol::scope::SCOPE_PART_BYTES_MAX);
        let names = ["orders", "a.b_c-9", "", "*", "a:b", "a b", "é", "/", &longest, &"q".repeat(65)];
        for kind in [Vhost, Exchange, Queue, Topic] {
            assert!(
                latchkey_protocol::scope::valid_part(kind.as_str()) && kind.as_str().len() <= Kind::BYTES_MAX
            );
            for action in [Access, Configure, Write, Read] {
                assert!(
                    latchkey_protocol::scope::valid_part(action.as_str())
                        && action.as_str().len() <= Action::BYTES_MAX
                );
                for name in names {
                    let whole = format!("{}:{name}:{}", kind.as_str(), action.as_str());
                    let expected = if latchkey_protocol::scope::validate_required(&whole).is_ok() {
                        whole
                    } else {
                        format!("{}:*:{}", kind.as_str(), action.as_str())
                    };
                    assert_eq!(&required_scope(kind, name, action), expected.as_str(), "{name:?}");
                }
            }
        }
    }

    #[test]
    fn resources_and_permissions_are_the_plugins_words_only() {
        assert_eq!(Kind::named("exchange"), Some(Kind::Exchange));
        assert_eq!(Kind::named("queue"), Some(Kind::Queue));
        assert_eq!(Kind::named("topic"), Some(Kind::Topic));
        // The vhost question has its own route; as a resource it is no word.
        for word in ["vhost", "Exchange", "", "exchanges", "*"] {
            assert_eq!(Kind::named(word), None, "{word:?}");
        }
        assert_eq!(Action::named("configure"), Some(Action::Configure));
        assert_eq!(Action::named("write"), Some(Action::Write));
        assert_eq!(Action::named("read"), Some(Action::Read));
        for word in ["access", "READ", "", "*", "writes"] {
            assert_eq!(Action::named(word), None, "{word:?}");
        }
    }
}
