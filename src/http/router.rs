//! Path matching: a table of `(method, pattern, endpoint)` rows, matched
//! segment by segment. Tells apart "no such path" (404 `M_UNRECOGNIZED`) from
//! "path exists, not with this method" (405 `M_UNRECOGNIZED`).
//!
//! Pattern segments: a literal, `:name` for one non-empty parameter, `:name?`
//! for one that may be empty (state keys), or `{a|b}` for one of several
//! literals (API versions such as `{r0|v3}`).

use super::request::{percent_decode, Method};

pub struct Route<E> {
    pub method: Method,
    pub pattern: &'static str,
    pub endpoint: E,
}

/// A path parameter: its name in the pattern and its decoded value.
pub type Params = Vec<(&'static str, String)>;

pub enum Match<E> {
    Found { endpoint: E, params: Params },
    MethodNotAllowed,
    NotFound,
}

/// Finds the endpoint for `method` and `path`.
pub fn find<E: Copy>(routes: &[Route<E>], method: Method, path: &str) -> Match<E> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut path_exists = false;
    for route in routes {
        if let Some(params) = match_pattern(route.pattern, &segments) {
            if route.method == method {
                return Match::Found { endpoint: route.endpoint, params };
            }
            path_exists = true;
        }
    }
    if path_exists {
        Match::MethodNotAllowed
    } else {
        Match::NotFound
    }
}

fn match_pattern(pattern: &'static str, segments: &[&str]) -> Option<Params> {
    let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, segment) in parts.iter().zip(segments) {
        if part.starts_with(':') {
            // `:name?` may be empty (a state key); `:name` may not.
            if segment.is_empty() && !part.ends_with('?') {
                return None;
            }
            let name = part.trim_start_matches(':').trim_end_matches('?');
            params.push((name, percent_decode(segment, false)));
        } else if let Some(choices) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if !choices.split('|').any(|choice| choice == *segment) {
                return None;
            }
        } else if part != segment {
            return None;
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[Route<u8>] = &[
        Route { method: Method::Get, pattern: "/_matrix/client/{r0|v3}/devices/:id", endpoint: 1 },
        Route { method: Method::Put, pattern: "/_matrix/client/{r0|v3}/devices/:id", endpoint: 2 },
        Route { method: Method::Get, pattern: "/_matrix/client/versions", endpoint: 3 },
        Route { method: Method::Put, pattern: "/state/:kind/:key?", endpoint: 4 },
    ];

    fn found(method: Method, path: &str) -> Option<(u8, Vec<(&'static str, String)>)> {
        match find(ROUTES, method, path) {
            Match::Found { endpoint, params } => Some((endpoint, params)),
            _ => None,
        }
    }

    #[test]
    fn matches_methods_versions_and_named_decoded_params() {
        assert_eq!(found(Method::Get, "/_matrix/client/v3/devices/AB%2FC"), Some((1, vec![("id", "AB/C".into())])));
        assert_eq!(found(Method::Put, "/_matrix/client/r0/devices/X"), Some((2, vec![("id", "X".into())])));
        assert_eq!(found(Method::Get, "/_matrix/client/versions"), Some((3, vec![])));
        assert_eq!(
            found(Method::Put, "/state/m.room.name/"),
            Some((4, vec![("kind", "m.room.name".into()), ("key", "".into())]))
        );
        assert_eq!(
            found(Method::Put, "/state/m.room.member/%40a%3Ab"),
            Some((4, vec![("kind", "m.room.member".into()), ("key", "@a:b".into())]))
        );
        assert_eq!(found(Method::Put, "/state//x"), None, "only `?` parameters may be empty");
    }

    #[test]
    fn tells_unknown_paths_from_wrong_methods() {
        assert!(matches!(find(ROUTES, Method::Delete, "/_matrix/client/v3/devices/X"), Match::MethodNotAllowed));
        assert!(matches!(find(ROUTES, Method::Get, "/_matrix/client/v4/devices/X"), Match::NotFound));
        assert!(matches!(find(ROUTES, Method::Get, "/_matrix/client/v3/devices/"), Match::NotFound));
        assert!(matches!(find(ROUTES, Method::Get, "/_matrix/client/v3/devices/X/more"), Match::NotFound));
    }
}
