//! Header rules of the proxy: which headers cross it, and the credential a request carries.

use actix_web::http::header::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::upstream::ApiKind;
use crate::config::Secret;

/// Hop-by-hop headers (RFC 9110 section 7.6.1 and RFC 9112), which describe one connection
/// and never cross a proxy. Headers that `Connection` names are dropped as well.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a header that must not be copied from one connection to the next. `host` and
/// `content-length` are dropped too because the client library sets them for the new
/// request or response.
pub fn is_connection_specific(name: &HeaderName, connection_listed: &[String]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name)
        || name == "host"
        || name == "content-length"
        || connection_listed.iter().any(|listed| listed == name)
}

/// Lowercased header names listed in the `Connection` header(s).
pub fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// Returns all values of a header joined with `,`, as RFC 9110 allows for list headers.
pub fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .filter_map(|value| value.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// True when the client opted out of the cache with `Cache-Control: no-cache` or `no-store`.
pub fn cache_opt_out(headers: &HeaderMap) -> bool {
    headers
        .get_all("cache-control")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|directive| directive.trim().to_ascii_lowercase())
        .any(|directive| directive == "no-cache" || directive == "no-store")
}

/// Checks the proxy access token of a request, from `Proxy-Authorization: Bearer TOKEN` or
/// the `x-cco-access-token` header, against the configured SHA-256 digests.
pub fn access_token_valid(headers: &HeaderMap, digests: &[[u8; 32]]) -> bool {
    let from_proxy_auth = headers.get("proxy-authorization").and_then(|value| {
        let bytes = value.as_bytes();
        match bytes.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => Some(&bytes[7..]),
            _ => None,
        }
    });
    let token = from_proxy_auth.or_else(|| {
        headers
            .get(super::ACCESS_TOKEN_HEADER)
            .map(|value| value.as_bytes())
    });
    match token {
        Some(token) => {
            let digest: [u8; 32] = Sha256::digest(token).into();
            digests.contains(&digest)
        }
        None => false,
    }
}

/// The credential of a request, identified by its hash only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialId {
    /// SHA-256 of the key; all zeros when the request carries none.
    pub hash: [u8; 32],
    pub present: bool,
}

impl CredentialId {
    /// First 12 hex digits of the hash, the form stored in analytics records.
    pub fn short(&self) -> Option<String> {
        self.present.then(|| hex::encode(&self.hash[..6]))
    }
}

/// Finds the key a request carries. For the Anthropic API that is `x-api-key`, else the
/// token of `Authorization: Bearer`. For the OpenAI API only the token counts, since OpenAI
/// reads no `x-api-key`. Where the client sends none, `fallback` (the upstream's key from the
/// environment) is used and returned so the caller can send it upstream.
pub fn credential<'a>(
    headers: &HeaderMap,
    kind: ApiKind,
    fallback: Option<&'a Secret>,
) -> (CredentialId, Option<&'a Secret>) {
    let api_key = match kind {
        ApiKind::Anthropic => headers.get("x-api-key").map(|value| value.as_bytes()),
        ApiKind::OpenAi => None,
    };
    let from_client = api_key.or_else(|| {
        headers.get("authorization").map(|value| {
            let bytes = value.as_bytes();
            match bytes.get(..7) {
                Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => &bytes[7..],
                _ => bytes,
            }
        })
    });
    match (from_client, fallback) {
        (Some(key), _) => (hash_credential(key), None),
        (None, Some(secret)) => (hash_credential(secret.expose().as_bytes()), Some(secret)),
        (None, None) => (
            CredentialId {
                hash: [0; 32],
                present: false,
            },
            None,
        ),
    }
}

fn hash_credential(key: &[u8]) -> CredentialId {
    CredentialId {
        hash: Sha256::digest(key).into(),
        present: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    const ANTHROPIC: ApiKind = ApiKind::Anthropic;

    #[test]
    fn bearer_and_api_key_hash_alike() {
        let a = credential(&headers(&[("x-api-key", "sk-1")]), ANTHROPIC, None).0;
        let b = credential(
            &headers(&[("authorization", "Bearer sk-1")]),
            ANTHROPIC,
            None,
        )
        .0;
        let c = credential(&headers(&[("x-api-key", "sk-2")]), ANTHROPIC, None).0;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.short().unwrap().len(), 12);
    }

    #[test]
    fn fallback_used_only_without_client_key() {
        let secret = Secret::new("sk-env");
        let (id, injected) = credential(&headers(&[]), ANTHROPIC, Some(&secret));
        assert!(id.present);
        assert!(injected.is_some());
        let (_, injected) =
            credential(&headers(&[("x-api-key", "sk-1")]), ANTHROPIC, Some(&secret));
        assert!(injected.is_none());
        let (id, _) = credential(&headers(&[]), ANTHROPIC, None);
        assert!(!id.present);
        assert_eq!(id.short(), None);
    }

    #[test]
    fn openai_reads_only_authorization() {
        let secret = Secret::new("sk-env");
        let only_api_key = headers(&[("x-api-key", "sk-1")]);
        let (id, injected) = credential(&only_api_key, ApiKind::OpenAi, Some(&secret));
        assert_eq!(id, credential(&headers(&[]), ANTHROPIC, Some(&secret)).0);
        assert!(
            injected.is_some(),
            "x-api-key does not authenticate to OpenAI"
        );
        let bearer = headers(&[("authorization", "Bearer sk-1")]);
        let (id, injected) = credential(&bearer, ApiKind::OpenAi, Some(&secret));
        assert_eq!(id, credential(&only_api_key, ANTHROPIC, None).0);
        assert!(injected.is_none());
    }

    #[test]
    fn connection_tokens_are_listed() {
        let map = headers(&[
            ("connection", "keep-alive, X-Trace"),
            ("connection", "close"),
        ]);
        let listed = connection_listed(&map);
        assert_eq!(listed, vec!["keep-alive", "x-trace", "close"]);
        assert!(is_connection_specific(
            &HeaderName::from_static("x-trace"),
            &listed
        ));
        assert!(!is_connection_specific(
            &HeaderName::from_static("anthropic-version"),
            &listed
        ));
    }

    #[test]
    fn cache_control_opt_out() {
        assert!(cache_opt_out(&headers(&[(
            "cache-control",
            "max-age=0, No-Cache"
        )])));
        assert!(cache_opt_out(&headers(&[("cache-control", "no-store")])));
        assert!(!cache_opt_out(&headers(&[("cache-control", "max-age=0")])));
    }
}
