//! Keys: token sequences with a typed namespace.

use std::sync::Arc;

/// A token id.
pub type Token = u32;

/// A cache namespace (SGLang's `extra_key`): requests in different namespaces never share cached
/// prefixes. Its parts are typed fields rather than one concatenated string so that, for example,
/// salt `"a1"` with adapter `""` can never collide with salt `"a"` with adapter `"1"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    tenant: Option<Arc<str>>,
    salt: Option<Arc<str>>,
    adapter: Option<Arc<str>>,
}

impl Namespace {
    /// The shared default namespace (no salt, no adapter).
    pub fn shared() -> Self {
        Self::default()
    }

    /// A namespace isolated by a client-supplied cache salt (or a tenant id).
    pub fn salted(salt: impl Into<Arc<str>>) -> Self {
        Self {
            tenant: None,
            salt: Some(salt.into()),
            adapter: None,
        }
    }

    /// The same namespace further separated by a tenant (for example, derived from an API key),
    /// so that tenants never see each other's cached prefixes.
    pub fn with_tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The same namespace with a cache salt.
    pub fn with_salt(mut self, salt: impl Into<Arc<str>>) -> Self {
        self.salt = Some(salt.into());
        self
    }

    /// The tenant, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The same namespace further separated by an adapter (LoRA) id.
    pub fn with_adapter(mut self, adapter: impl Into<Arc<str>>) -> Self {
        self.adapter = Some(adapter.into());
        self
    }

    /// The cache salt, if any.
    pub fn salt(&self) -> Option<&str> {
        self.salt.as_deref()
    }

    /// The adapter id, if any.
    pub fn adapter(&self) -> Option<&str> {
        self.adapter.as_deref()
    }

    /// True for the shared default namespace.
    pub fn is_shared(&self) -> bool {
        self.tenant.is_none() && self.salt.is_none() && self.adapter.is_none()
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_shared() {
            return write!(f, "shared");
        }
        let parts: Vec<String> = [
            ("tenant", &self.tenant),
            ("salt", &self.salt),
            ("adapter", &self.adapter),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name}={v:?}")))
        .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// An owned key: a token sequence in a namespace (SGLang's `RadixKey`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RadixKey {
    /// The tokens.
    pub tokens: Vec<Token>,
    /// The namespace the tokens live in.
    pub namespace: Namespace,
}

impl RadixKey {
    /// A key in the given namespace.
    pub fn new(tokens: Vec<Token>, namespace: Namespace) -> Self {
        Self { tokens, namespace }
    }

    /// A key in the shared namespace.
    pub fn from_tokens(tokens: Vec<Token>) -> Self {
        Self::new(tokens, Namespace::shared())
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the key has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// A borrowed view of this key, optionally cut to its first `len` tokens.
    pub fn prefix(&self, len: usize) -> KeyRef<'_> {
        KeyRef::new(&self.tokens[..len.min(self.tokens.len())], &self.namespace)
    }
}

/// A borrowed key: what the cache's operations take, so callers can match slices of their own
/// buffers without copying. Slicing keeps the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// The tokens.
    pub tokens: &'a [Token],
    /// The namespace the tokens live in.
    pub namespace: &'a Namespace,
}

impl<'a> KeyRef<'a> {
    /// A borrowed key over `tokens` in `namespace`.
    pub fn new(tokens: &'a [Token], namespace: &'a Namespace) -> Self {
        Self { tokens, namespace }
    }

    /// The first `len` tokens (or all of them if there are fewer), same namespace.
    pub fn prefix(self, len: usize) -> Self {
        Self::new(&self.tokens[..len.min(self.tokens.len())], self.namespace)
    }
}

impl<'a> From<&'a RadixKey> for KeyRef<'a> {
    fn from(key: &'a RadixKey) -> Self {
        KeyRef::new(&key.tokens, &key.namespace)
    }
}
