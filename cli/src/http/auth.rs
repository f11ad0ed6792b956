//! API keys: `Authorization: Bearer <key>` (scheme case-insensitive), compared in constant time
//! on SHA-256 digests so neither a key's bytes nor its length leak through timing. Each tenant
//! key is its own cache namespace; the admin key alone may use the admin routes.

use super::error::ApiError;
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Who is calling, as far as the cache is concerned.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The tenant's cache namespace (`None` without authentication).
    pub tenant: Option<String>,
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any valid key (tenant or admin).
    Tenant,
    /// The admin key.
    Admin,
}

/// The configured keys, kept as digests.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    tenants: Vec<[u8; 32]>,
    admin: Option<[u8; 32]>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header, the scheme in any case.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Keys {
    /// Tenant keys (empty strings dropped) and an optional admin key.
    pub fn new(tenants: &[String], admin: Option<&str>) -> Self {
        Keys {
            tenants: tenants
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| digest(k))
                .collect(),
            admin: admin.filter(|k| !k.is_empty()).map(digest),
        }
    }

    /// Whether any key is configured (then every route but `/health` needs one).
    pub fn enabled(&self) -> bool {
        !self.tenants.is_empty() || self.admin.is_some()
    }

    /// Checks the request's key against what the route requires.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::default());
        }
        let given = digest(bearer(headers).ok_or_else(ApiError::unauthorized)?);
        let is_admin: bool = self
            .admin
            .map_or(Choice::from(0), |a| a.ct_eq(&given))
            .into();
        let is_tenant: bool = self
            .tenants
            .iter()
            .fold(Choice::from(0), |acc, k| acc | k.ct_eq(&given))
            .into();
        let caller = Caller {
            tenant: Some(given[..8].iter().map(|b| format!("{b:02x}")).collect()),
        };
        match scope {
            Scope::Admin if is_admin => Ok(caller),
            Scope::Admin if is_tenant => Err(ApiError::forbidden(if self.admin.is_some() {
                "this route needs the admin key"
            } else {
                "this route needs the admin key, and none is configured (--admin-api-key)"
            })),
            Scope::Tenant if is_admin || is_tenant => Ok(caller),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(v).expect("ascii"),
        );
        h
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_keys_must_match() {
        let keys = Keys::new(&["k1".into(), "k2".into()], Some("root"));
        for v in ["Bearer k1", "bearer k1", "BEARER  k2 "] {
            assert!(keys.check(&with_auth(v), Scope::Tenant).is_ok(), "{v}");
        }
        for v in ["Bearer k3", "Basic k1", "k1", "Bearer", "Bearer k1x"] {
            let e = keys.check(&with_auth(v), Scope::Tenant).expect_err(v);
            assert_eq!(e.status().as_u16(), 401, "{v}");
        }
        assert_eq!(
            keys.check(&HeaderMap::new(), Scope::Tenant)
                .expect_err("no header")
                .status()
                .as_u16(),
            401
        );
    }

    #[test]
    fn tenants_get_distinct_namespaces_and_only_the_admin_key_opens_admin_routes() {
        let keys = Keys::new(&["k1".into(), "k2".into()], Some("root"));
        let t1 = keys
            .check(&with_auth("Bearer k1"), Scope::Tenant)
            .expect("k1");
        let t2 = keys
            .check(&with_auth("Bearer k2"), Scope::Tenant)
            .expect("k2");
        assert_ne!(t1.tenant, t2.tenant);
        assert!(t1.tenant.is_some());
        let e = keys
            .check(&with_auth("Bearer k1"), Scope::Admin)
            .expect_err("tenant on admin route");
        assert_eq!(e.status().as_u16(), 403);
        assert!(keys.check(&with_auth("Bearer root"), Scope::Admin).is_ok());
        assert!(keys.check(&with_auth("Bearer root"), Scope::Tenant).is_ok());

        let open = Keys::new(&[], None);
        assert!(!open.enabled());
        assert!(open.check(&HeaderMap::new(), Scope::Admin).is_ok());
        let no_admin = Keys::new(&["k1".into()], None);
        let e = no_admin
            .check(&with_auth("Bearer k1"), Scope::Admin)
            .expect_err("no admin key configured");
        assert_eq!(e.status().as_u16(), 403);
    }
}
