//! Where a route's token may arrive (`auth.token_from`): the `Authorization` header, a cookie, or
//! a query parameter, for clients that cannot set a header (a browser's WebSocket handshake, an
//! `<img>` or `EventSource`).
//!
//! The gateway and whatever runs behind it must never read different tokens from one request,
//! so anything that could be read two ways is refused: two listed sources present at once, a
//! cookie or parameter named twice. Query parameters are split at `;` as well as `&`, because
//! some upstream frameworks still split there: a token hidden after a `;` must be found (and
//! removed) here rather than read there.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

use crate::config::TokenSource;

/// What the listed sources of a request hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// None of the listed sources is present.
    Absent,
    /// The `Authorization` header: read by `bearer`, with its own strict rules.
    Header,
    /// A cookie's or query parameter's value, decoded; not yet known to be a token.
    Value(Cow<'a, str>),
}

/// Why the listed sources cannot be read as one token (answered 400 `invalid_request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ambiguity {
    /// Two sources present, or one cookie or parameter given twice.
    SeveralTokens,
    /// A query value that does not decode to UTF-8.
    Undecodable,
}

/// The one source among `sources` this request uses, if any.
///
/// # Errors
///
/// [`Ambiguity`] when the request could be read as carrying more than one token.
pub fn presented<'a>(
    sources: &[TokenSource],
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Presented<'a>, Ambiguity> {
    let mut found = Presented::Absent;
    let mut take = |next: Presented<'a>| match found {
        Presented::Absent => {
            found = next;
            Ok(())
        }
        _ => Err(Ambiguity::SeveralTokens),
    };
    for source in sources {
        match source {
            TokenSource::Header => {
                if headers.contains_key(AUTHORIZATION) {
                    take(Presented::Header)?;
                }
            }
            TokenSource::Cookie(name) => {
                for value in cookies(headers, name) {
                    take(Presented::Value(Cow::Borrowed(value)))?;
                }
            }
            TokenSource::Query(name) => {
                for (_, value) in params(query.unwrap_or(""), name) {
                    let value = form_decode(value).ok_or(Ambiguity::Undecodable)?;
                    take(Presented::Value(value))?;
                }
            }
        }
    }
    Ok(found)
}

/// The values of the cookies called `name`, from every `Cookie` field (HTTP/2 may split them).
fn cookies<'a, 'n>(
    headers: &'a HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, value) = pair.trim_matches([' ', '\t']).split_once('=')?;
            (n == name).then(|| unquote(value))
        })
}

/// RFC 6265 4.1.1 lets a cookie value be wrapped in double quotes.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The parameters of `query` whose decoded name is `name`: (the whole `name=value` segment,
/// the raw value).
fn params<'a, 'n>(
    query: &'a str,
    name: &'n str,
) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a, 'n> {
    query.split(['&', ';']).filter_map(move |segment| {
        let (n, value) = segment.split_once('=').unwrap_or((segment, ""));
        (form_decode(n).as_deref() == Some(name)).then_some((segment, value))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte. `None` when the
/// bytes are not UTF-8; a `%` without two hex digits stays as it is, as browsers read it.
pub fn form_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `query` without the parameters called `name`, the others byte for byte and in order; `None`
/// when there is none to remove (the query is forwarded as it came).
#[must_use]
pub fn without_param(query: &str, name: &str) -> Option<String> {
    params(query, name).next()?;
    let mut kept = String::with_capacity(query.len());
    let mut any_kept = false;
    let mut start = 0;
    // Each segment with the separator before it, so the kept ones are rejoined as they were.
    for (at, _) in query
        .match_indices(['&', ';'])
        .chain(std::iter::once((query.len(), "")))
    {
        let segment = &query[start..at];
        let separator = if start == 0 {
            ""
        } else {
            &query[start - 1..start]
        };
        let (n, _) = segment.split_once('=').unwrap_or((segment, ""));
        if form_decode(n).as_deref() != Some(name) {
            if any_kept {
                kept.push_str(separator);
            }
            kept.push_str(segment);
            any_kept = true;
        }
        start = at + 1;
    }
    Some(kept)
}

/// The `Cookie` fields joined into one (RFC 9113 8.2.3), without the cookies named in `drop`;
/// `None` when nothing is left.
#[must_use]
pub fn rewritten_cookie(headers: &HeaderMap, drop: &[&str]) -> Option<String> {
    let mut joined = String::new();
    for field in headers.get_all(COOKIE) {
        let Ok(field) = field.to_str() else { continue };
        for pair in field.split(';') {
            let pair = pair.trim_matches([' ', '\t']);
            if pair.is_empty() {
                continue;
            }
            let cookie_name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if drop.contains(&cookie_name) {
                continue;
            }
            if !joined.is_empty() {
                joined.push_str("; ");
            }
            joined.push_str(pair);
        }
    }
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Header,
            TokenSource::Cookie("at".into()),
            TokenSource::Query("access_token".into()),
        ]
    }

    #[test]
    fn one_source_is_read_and_two_are_refused() {
        let h = headers(&[("cookie", "a=1; at=tok.en; b=2")]);
        assert_eq!(
            presented(&sources(), &h, None),
            Ok(Presented::Value(Cow::Borrowed("tok.en")))
        );
        assert_eq!(
            presented(&sources(), &h, Some("access_token=x")),
            Err(Ambiguity::SeveralTokens)
        );
        let h = headers(&[("authorization", "Bearer x"), ("cookie", "at=y")]);
        assert_eq!(
            presented(&sources(), &h, None),
            Err(Ambiguity::SeveralTokens)
        );
        // HTTP/2 split fields are one list: a second `at` in another field is still a second.
        let h = headers(&[("cookie", "at=1"), ("cookie", "at=2")]);
        assert_eq!(
            presented(&sources(), &h, None),
            Err(Ambiguity::SeveralTokens)
        );
        assert_eq!(
            presented(&sources(), &HeaderMap::new(), Some("a=1")),
            Ok(Presented::Absent)
        );
    }

    #[test]
    fn unlisted_sources_are_ignored() {
        let only_cookie = [TokenSource::Cookie("at".into())];
        let h = headers(&[("authorization", "Basic eDp5"), ("cookie", "at=t")]);
        assert_eq!(
            presented(&only_cookie, &h, Some("access_token=u")),
            Ok(Presented::Value(Cow::Borrowed("t")))
        );
    }

    #[test]
    fn query_names_and_values_are_form_decoded() {
        let q = [TokenSource::Query("access_token".into())];
        let h = HeaderMap::new();
        assert_eq!(
            presented(&q, &h, Some("%61ccess_token=a%2Eb")),
            Ok(Presented::Value(Cow::Owned("a.b".into())))
        );
        // A `;` separates parameters for some upstreams: the token behind it is seen here.
        assert_eq!(
            presented(&q, &h, Some("x=1;access_token=t&access_token=u")),
            Err(Ambiguity::SeveralTokens)
        );
        assert_eq!(
            presented(&q, &h, Some("access_token=%ff")),
            Err(Ambiguity::Undecodable)
        );
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("a+b%2").as_deref(), Some("a b%2"));
    }

    #[test]
    fn the_token_parameter_is_removed_and_the_rest_kept_byte_for_byte() {
        let strip = |q| without_param(q, "access_token");
        assert_eq!(strip("a=1"), None);
        assert_eq!(strip("access_token=x").as_deref(), Some(""));
        assert_eq!(
            strip("a=%2F&access_token=x&b=2;c").as_deref(),
            Some("a=%2F&b=2;c")
        );
        assert_eq!(strip("access_token=x;b=2").as_deref(), Some("b=2"));
        assert_eq!(strip("a=1&&%61ccess_token=x").as_deref(), Some("a=1&"));
    }

    #[test]
    fn cookies_are_joined_and_the_token_cookie_dropped() {
        let h = headers(&[("cookie", "a=1; at=x"), ("cookie", "b=2")]);
        assert_eq!(rewritten_cookie(&h, &["at"]).as_deref(), Some("a=1; b=2"));
        assert_eq!(rewritten_cookie(&h, &[]).as_deref(), Some("a=1; at=x; b=2"));
        let h = headers(&[("cookie", "at=x")]);
        assert_eq!(rewritten_cookie(&h, &["at"]), None);
    }
}
