//! Typed identities of resources: a namespace and a name, written `namespace/name` (the form
//! the store, the API paths, the CLI and the logs use). A [`BrokerId`], a [`TriggerId`] and a
//! [`SourceId`] are different types, so one cannot be passed where another is meant, and
//! `namespace/name` is built and parsed here only.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// The kinds an [`Id`] can name.
pub mod kind {
    /// A Broker.
    #[derive(Debug)]
    pub enum Broker {}
    /// A Trigger.
    #[derive(Debug)]
    pub enum Trigger {}
    /// A source of any kind (sources share one name space per namespace).
    #[derive(Debug)]
    pub enum Source {}
}

/// A Broker, by namespace and name.
pub type BrokerId = Id<kind::Broker>;
/// A Trigger, by namespace and name.
pub type TriggerId = Id<kind::Trigger>;
/// A source, by namespace and name.
pub type SourceId = Id<kind::Source>;

/// The identity of a resource of kind `K`.
pub struct Id<K> {
    namespace: String,
    name: String,
    kind: PhantomData<fn() -> K>,
}

/// Text that is not `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not namespace/name")]
pub struct IdError(pub String);

impl<K> Id<K> {
    /// The resource `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Id {
            namespace: namespace.into(),
            name: name.into(),
            kind: PhantomData,
        }
    }

    /// Parses `namespace/name` (both parts non-empty, one slash).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Id::new(ns, name))
            }
            _ => Err(IdError(text.to_owned())),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `namespace/name`, the key an [`Id`] displays as, built without one (for lookups on a hot
/// path that has the two parts).
pub fn join(namespace: &str, name: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + 1 + name.len());
    key.push_str(namespace);
    key.push('/');
    key.push_str(name);
    key
}

impl<K> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl<K> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        Id::new(self.namespace.clone(), self.name.clone())
    }
}

impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }
}

impl<K> Eq for Id<K> {}

impl<K> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.namespace, &self.name).cmp(&(&other.namespace, &other.name))
    }
}

impl<K> From<&(String, String)> for Id<K> {
    fn from((ns, name): &(String, String)) -> Self {
        Id::new(ns.clone(), name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_parsed_as_namespace_slash_name() {
        let b = BrokerId::new("shop", "orders");
        assert_eq!(b.to_string(), "shop/orders");
        assert_eq!(BrokerId::parse("shop/orders"), Ok(b.clone()));
        assert_eq!(b.namespace(), "shop");
        assert_eq!(b.name(), "orders");
        for bad in ["orders", "/orders", "shop/", "a/b/c", ""] {
            assert_eq!(BrokerId::parse(bad), Err(IdError(bad.to_owned())), "{bad}");
        }
        assert_eq!(IdError("x".into()).to_string(), "`x` is not namespace/name");
    }
}
