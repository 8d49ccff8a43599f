//! A question's context record: described once by kubegate's code ([`Fact`]), and
//! handed to Cedar either as values built directly or as expressions Cedar evaluates.
//!
//! `Context::from_pairs` evaluates an expression tree into values on every call
//! (profiled: about a fifth of a decision, for records of a handful of strings), though
//! kubegate only ever puts literals, sets, records and addresses in a context. Decisions
//! use [`Fact::value`]; the expression form is the reference ([`super::entity_store::Assembly::Direct`])
//! and, in checked builds (every test), each context is built both ways and compared.

use cedar_policy::{Context, RestrictedExpression};
use cedar_policy_core::ast::{self, Value, ValueKind};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

/// A value in a context, as kubegate builds it.
#[derive(Debug, Clone)]
pub(super) enum Fact<'a> {
    Text(Cow<'a, str>),
    Number(i64),
    Flag(bool),
    /// `ip("<address>")`; an unparsable address is the unspecified one.
    Address(&'a str),
    Set(Vec<Fact<'a>>),
    Record(Vec<(&'static str, Fact<'a>)>),
}

/// A context: its attributes, each named once.
pub(super) type Record<'a> = Vec<(&'static str, Fact<'a>)>;

impl<'a> Fact<'a> {
    pub(super) fn text(text: &'a str) -> Self {
        Fact::Text(Cow::Borrowed(text))
    }

    /// The value, built directly.
    fn value(&self) -> Result<Value, String> {
        Ok(match self {
            Fact::Text(text) => Value::from(text.as_ref()),
            Fact::Number(n) => Value::from(*n),
            Fact::Flag(b) => Value::from(*b),
            Fact::Address(address) => address_value(address)?,
            Fact::Set(items) => Value::set(items.iter().map(Fact::value).collect::<Result<Vec<_>, _>>()?, None),
            Fact::Record(pairs) => Value::record(values(pairs)?, None),
        })
    }

    /// The expression Cedar evaluates to the value.
    fn expression(&self) -> Result<RestrictedExpression, String> {
        Ok(match self {
            Fact::Text(text) => RestrictedExpression::new_string(text.to_string()),
            Fact::Number(n) => RestrictedExpression::new_long(*n),
            Fact::Flag(b) => RestrictedExpression::new_bool(*b),
            Fact::Address(address) => ip(address),
            Fact::Set(items) => {
                RestrictedExpression::new_set(items.iter().map(Fact::expression).collect::<Result<Vec<_>, _>>()?)
            }
            Fact::Record(pairs) => RestrictedExpression::new_record(expressions(pairs)?).map_err(|e| e.to_string())?,
        })
    }
}

fn values(pairs: &Record<'_>) -> Result<Vec<(&'static str, Value)>, String> {
    pairs.iter().map(|(k, v)| Ok((*k, v.value()?))).collect()
}

fn expressions(pairs: &Record<'_>) -> Result<Vec<(String, RestrictedExpression)>, String> {
    pairs.iter().map(|(k, v)| Ok(((*k).to_owned(), v.expression()?))).collect()
}

/// `record` as a context of values built directly.
pub(super) fn from_values(record: &Record<'_>) -> Result<Context, String> {
    match Value::record(values(record)?, None).value {
        ValueKind::Record(attributes) => Ok(Context::from(ast::Context::Value(attributes))),
        _ => Err("a context must be a record".to_owned()),
    }
}

/// `record` as Cedar builds it from expressions (the reference).
pub(super) fn from_expressions(record: &Record<'_>) -> Result<Context, String> {
    Context::from_pairs(expressions(record)?).map_err(|e| e.to_string())
}

/// Both ways, refused unless they agree: what checked builds use.
pub(super) fn checked(record: &Record<'_>) -> Result<Context, String> {
    let (direct, evaluated) = (from_values(record)?, from_expressions(record)?);
    if direct != evaluated {
        return Err(format!("context built from values ({direct}) differs from Cedar's ({evaluated})"));
    }
    Ok(direct)
}

/// Addresses whose value (and expression) is kept, per thread.
const ADDRESSES_KEPT: usize = 4096;

thread_local! {
    static IP_EXPRESSIONS: RefCell<HashMap<String, RestrictedExpression>> = RefCell::new(HashMap::new());
    static IP_VALUES: RefCell<HashMap<String, Value>> = RefCell::new(HashMap::new());
}

/// The address as Cedar's `ip` should read it: an IPv4-mapped IPv6 address (what a
/// dual-stack listener reports for an IPv4 peer) is that IPv4 address, since `ip`
/// refuses IPv6 written with dots; anything unparsable is the unspecified address,
/// rather than an evaluation error on every question.
fn usable(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(parsed) => {
            let text = parsed.to_canonical().to_string();
            if text.contains(':') && text.contains('.') {
                "0.0.0.0".to_owned()
            } else {
                text
            }
        }
        Err(_) => "0.0.0.0".to_owned(),
    }
}

/// `ip("<address>")`. `RestrictedExpression::new_ip` runs Cedar's parser on the name
/// `ip` every time (its lexer builds a regex matcher per call: a tenth of a decision,
/// profiled), so each thread keeps the expressions of the addresses it has seen.
fn ip(address: &str) -> RestrictedExpression {
    let made: Result<_, std::convert::Infallible> =
        kept(&IP_EXPRESSIONS, address, || Ok(RestrictedExpression::new_ip(usable(address))));
    let Ok(expression) = made;
    expression
}

/// The value of `ip("<address>")`, evaluated by Cedar once per thread and address (an
/// extension value has no public constructor).
fn address_value(address: &str) -> Result<Value, String> {
    kept(&IP_VALUES, address, || {
        let evaluated = Context::from_pairs([("ip".to_owned(), ip(address))]).map_err(|e| e.to_string())?;
        match evaluated.as_ref() {
            ast::Context::Value(attributes) => attributes.get("ip").cloned(),
            ast::Context::RestrictedResidual(_) => None,
        }
        .ok_or_else(|| format!("ip(\"{}\") has no value", usable(address)))
    })
}

fn kept<T: Clone, E>(
    cache: &'static std::thread::LocalKey<RefCell<HashMap<String, T>>>,
    key: &str,
    make: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    cache.with_borrow_mut(|kept| {
        if let Some(found) = kept.get(key) {
            return Ok(found.clone());
        }
        if kept.len() >= ADDRESSES_KEPT {
            kept.clear();
        }
        let made = make()?;
        kept.insert(key.to_owned(), made.clone());
        Ok(made)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESSES: [&str; 7] = ["10.1.2.3", "192.168.0.1", "127.0.0.1", "::1", "2001:db8::1", "not an address", ""];

    /// Each address as Cedar should read it.
    const READ_AS: [(&str, &str); 11] = [
        ("10.1.2.3", "10.1.2.3"),
        ("::1", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        // A dual-stack listener's IPv4 peer: Cedar's `ip` refuses the dotted form.
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::ffff:0a00:0001", "10.0.0.1"),
        ("::1.2.3.4", "::102:304"),
        ("not an address", "0.0.0.0"),
        ("", "0.0.0.0"),
        ("10.0.0.1:443", "0.0.0.0"),
        ("010.0.0.1", "0.0.0.0"),
    ];

    #[test]
    fn the_kept_ip_expressions_and_values_are_the_ones_cedar_builds() {
        for (address, fresh) in READ_AS {
            for _ in 0..2 {
                assert_eq!(ip(address), RestrictedExpression::new_ip(fresh), "{address}");
                let cedars = Context::from_pairs([("a".to_owned(), RestrictedExpression::new_ip(fresh))])
                    .unwrap_or_else(|e| panic!("{e}"));
                let record = vec![("a", Fact::Address(address))];
                assert_eq!(from_values(&record).unwrap_or_else(|e| panic!("{e}")), cedars, "{address}");
            }
        }
    }

    /// A context built from values must be exactly the one Cedar evaluates: a
    /// difference would be a policy reading something other than what it was written
    /// against.
    #[test]
    fn values_built_directly_equal_cedars_evaluation() {
        let texts =
            ["", "plain", "ü \"quoted\"", "nul\u{0}inside", "a much longer string than fits inline in a small string"];
        for (i, text) in texts.iter().enumerate() {
            let record = vec![
                ("text", Fact::text(text)),
                ("owned", Fact::Text(Cow::Owned(text.repeat(2)))),
                ("number", Fact::Number(i64::MIN + i as i64)),
                ("flag", Fact::Flag(i % 2 == 0)),
                ("address", Fact::Address(ADDRESSES[i])),
                ("set", Fact::Set(texts[..i].iter().map(|t| Fact::text(t)).collect())),
                (
                    "nested",
                    Fact::Record(vec![
                        ("inner", Fact::Record(vec![("n", Fact::Number(i as i64))])),
                        ("empty", Fact::Set(vec![])),
                    ]),
                ),
            ];
            assert_eq!(
                from_values(&record).unwrap_or_else(|e| panic!("{e}")),
                from_expressions(&record).unwrap_or_else(|e| panic!("{e}")),
                "{text}"
            );
            assert!(checked(&record).is_ok());
        }
    }

    #[test]
    fn a_difference_is_refused() {
        // Cedar refuses a record naming one attribute twice; a map of values would
        // keep one of them silently, so the checked build must say no.
        let record = vec![("same", Fact::Number(1)), ("same", Fact::Number(2))];
        assert!(from_expressions(&record).is_err());
        assert!(checked(&record).is_err());
    }
}
