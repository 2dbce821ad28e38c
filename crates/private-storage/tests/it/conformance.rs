//! The storage conformance suite against every built-in backend.
use crate::common;

use private_storage::{CachedStorage, LocalStorage, MemoryStorage, testing::conformance};

#[tokio::test(flavor = "multi_thread")]
async fn memory_storage_keeps_the_storage_contract() {
    conformance(&MemoryStorage::new().with_chunk_size(4096)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_storage_keeps_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path()).unwrap();
    conformance(&storage).await;
    // Nothing staged is left behind anywhere in the tree.
    let leftovers: Vec<_> = common::entries(dir.path()).into_iter().filter(|p| p.contains(".ps-tmp-")).collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_storage_through_a_shared_handle_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let storage: std::sync::Arc<dyn private_storage::Storage> =
        std::sync::Arc::new(LocalStorage::new(dir.path()).unwrap());
    conformance(&storage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_in_front_of_local_storage_keeps_the_contract() {
    // Every check writes through the cache and reads back: a stale answer fails it.
    let dir = tempfile::tempdir().unwrap();
    conformance(&CachedStorage::new(LocalStorage::new(dir.path()).unwrap(), 1 << 20)).await;
}
