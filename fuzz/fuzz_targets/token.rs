//! Share-link verification: no token an attacker can make without the key opens a file.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use private_storage::{
    MemoryRevocations, MemoryStorage, ObjectKey, ServePrivate, ServeShared, ShareKeys, ShareLinks, StorageExt,
};

fn fixture() -> &'static (tokio::runtime::Runtime, ServeShared) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, ServeShared)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let storage = MemoryStorage::new();
        runtime.block_on(storage.put_bytes(&ObjectKey::new("secret.txt").unwrap(), "secret")).unwrap();
        let links = ShareLinks::new(ShareKeys::new("k1", [9u8; 32]).unwrap(), MemoryRevocations::new());
        (runtime, ServeShared::new(links, ServePrivate::new(storage)))
    })
}

fuzz_target!(|token: &str| {
    let (runtime, service) = fixture();
    let response = runtime.block_on(service.serve(token, http::Request::get("/").body(()).unwrap()));
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN, "a forged token was not refused");
});
