//! `GET /api/stats` (the recent history behind the status page's charts,
//! the plugins' activity, the largest groups and the hosts sharing them) and `GET
//! /api/stats/groups` (groups by size, searched by name). Both only read:
//! the history is kept by [`crate::admin::sampler`], the sizes are counted on
//! request ([`crate::admin::group_sizes`]).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::{
    admin::group_sizes::{self, LARGEST, MAX_LIMIT, MAX_SEARCH},
    admin::state::Admin,
};

/// `GET /api/stats`.
pub(crate) async fn stats(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    let mut answer = admin.stats_json();
    let sizes = group_sizes::largest(admin.groups.local(), "", LARGEST);
    answer["groups"] = json!({ "count": sizes.count, "largest": sizes.groups });
    // With groups over Redis, the hosts sharing them (from their presence).
    answer["hosts"] = json!(admin.groups.hosts().await);
    Json(answer)
}

/// `GET /api/stats/groups?search=<text>&limit=<n>`: the largest groups
/// whose name contains `search` (ASCII case-insensitive; every group
/// without it), at most `limit` (default [`LARGEST`], at most
/// [`MAX_LIMIT`]).
pub(crate) async fn groups(State(admin): State<Arc<Admin>>, uri: Uri) -> Response {
    let query = match GroupQuery::parse(uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(message) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
        }
    };
    let sizes = group_sizes::largest(admin.groups.local(), &query.search, query.limit);
    Json(json!({
        "search": query.search,
        "limit": query.limit,
        "count": sizes.count,
        "matched": sizes.matched,
        "groups": sizes.groups,
    }))
    .into_response()
}

/// The parameters of `/api/stats/groups`.
#[derive(Debug, PartialEq, Eq)]
struct GroupQuery {
    search: String,
    limit: usize,
}

impl GroupQuery {
    /// Reads `search` and `limit` from a query string; anything else, a
    /// parameter twice, or a value out of bounds is an error that says so.
    fn parse(query: &str) -> Result<GroupQuery, String> {
        let mut search = None;
        let mut limit = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| {
                format!("The value of '{key}' is not valid percent-encoded UTF-8.")
            })?;
            let slot = match key {
                "search" => &mut search,
                "limit" => &mut limit,
                _ => {
                    return Err(format!(
                        "Unknown parameter '{}'; use search and limit.",
                        key.chars().take(40).collect::<String>()
                    ))
                }
            };
            if slot.replace(value).is_some() {
                return Err(format!("The parameter '{key}' is given twice."));
            }
        }
        let search = search.unwrap_or_default();
        if search.len() > MAX_SEARCH {
            return Err(format!("search is longer than {MAX_SEARCH} bytes."));
        }
        let limit = match limit {
            None => LARGEST,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}."
                    ))
                }
            },
        };
        Ok(GroupQuery { search, limit })
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it); `None` for a
/// broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_and_bounded() {
        let parsed = GroupQuery::parse("search=room%2D1+a&limit=5").unwrap();
        assert_eq!(
            parsed,
            GroupQuery {
                search: "room-1 a".into(),
                limit: 5
            }
        );
        assert_eq!(GroupQuery::parse("").unwrap().limit, LARGEST);
        assert_eq!(GroupQuery::parse("search=%C3%A9").unwrap().search, "é");
        for bad in [
            "limit=0",
            "limit=101",
            "limit=x",
            "search=a&search=b",
            "color=red",
            "search=%zz",
            "search=%C3",
            "search=%4",
        ] {
            assert!(GroupQuery::parse(bad).is_err(), "{bad}");
        }
        let long = format!("search={}", "a".repeat(MAX_SEARCH + 1));
        assert!(GroupQuery::parse(&long).is_err());
    }
}
