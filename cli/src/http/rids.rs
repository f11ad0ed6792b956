//! Client request ids (`rid`) of `/generate`, so that `/abort_request` can find a request.
//! Each id is scoped to its caller's tenant: one tenant cannot abort another's request.

use super::error::ApiError;
use super::params::MAX_SALT_BYTES;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Key = (Option<String>, String);

/// The requests in flight that carry a client id.
#[derive(Debug, Default)]
pub struct Rids {
    live: Mutex<HashMap<Key, u64>>,
}

/// Holds a client id while its request runs; dropping it forgets the id.
#[derive(Debug)]
pub struct RidGuard {
    rids: Arc<Rids>,
    key: Key,
}

impl Drop for RidGuard {
    fn drop(&mut self) {
        if let Ok(mut live) = self.rids.live.lock() {
            live.remove(&self.key);
        }
    }
}

impl Rids {
    /// Records `rid` (for `tenant`) as the engine request `id`; 400 if it is already in flight.
    pub fn register(
        self: &Arc<Self>,
        tenant: Option<String>,
        rid: String,
        id: u64,
    ) -> Result<RidGuard, ApiError> {
        if rid.is_empty() || rid.len() > MAX_SALT_BYTES {
            return Err(
                ApiError::bad(format!("rid must be 1 to {MAX_SALT_BYTES} bytes")).param("rid"),
            );
        }
        let key = (tenant, rid);
        let mut live = self
            .live
            .lock()
            .map_err(|_| ApiError::internal("the request-id table is poisoned"))?;
        if live.contains_key(&key) {
            return Err(ApiError::bad(format!(
                "a request with rid {:?} is already running",
                key.1
            ))
            .param("rid"));
        }
        live.insert(key.clone(), id);
        Ok(RidGuard {
            rids: Arc::clone(self),
            key,
        })
    }

    /// The engine id of `rid` for `tenant`, if it is in flight.
    pub fn find(&self, tenant: Option<String>, rid: &str) -> Option<u64> {
        let live = self.live.lock().ok()?;
        live.get(&(tenant, rid.to_string())).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_scoped_by_tenant_and_forgotten_when_their_guard_drops() {
        let rids = Arc::new(Rids::default());
        let a = rids
            .register(Some("t1".into()), "r".into(), 7)
            .expect("fresh");
        assert!(
            rids.register(Some("t1".into()), "r".into(), 8).is_err(),
            "in flight"
        );
        let b = rids
            .register(Some("t2".into()), "r".into(), 9)
            .expect("another tenant");
        assert_eq!(rids.find(Some("t1".into()), "r"), Some(7));
        assert_eq!(rids.find(Some("t2".into()), "r"), Some(9));
        assert_eq!(rids.find(None, "r"), None);
        drop(a);
        assert_eq!(rids.find(Some("t1".into()), "r"), None);
        drop(b);
        assert!(rids.register(None, String::new(), 1).is_err());
    }
}
