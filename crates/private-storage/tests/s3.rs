//! `S3Storage` against real S3-compatible servers on loopback: s3s-fs in-process and Garage.

mod common;
#[path = "common/s3.rs"]
mod servers;

use private_storage::testing::{conformance, conformance_skipping};

#[tokio::test(flavor = "multi_thread")]
async fn s3_storage_keeps_the_storage_contract_on_s3s_fs() {
    let server = servers::s3s_fs().await;
    // s3s-fs ignores If-None-Match: create-only writes check first there.
    let storage = server.builder().conditional_writes(false).build().unwrap();
    // s3s-fs keeps objects as files, so a folder answers HEAD; Garage runs that check below.
    conformance_skipping(&storage, &["folder-is-not-an-object"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_storage_keeps_the_storage_contract_on_garage_under_a_prefix() {
    let server = servers::garage().await;
    // Garage 2.x ignores If-None-Match on writes (see the next test).
    let storage = server.builder().prefix("tenant-a/files").conditional_writes(false).build().unwrap();
    storage.check_writes().await.unwrap();
    conformance(&storage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_conditional_writes_is_caught_by_the_write_check() {
    let server = servers::garage().await;
    let storage = server.builder().build().unwrap();
    match storage.check_writes().await {
        Err(private_storage::Error::Config { setting, .. }) => assert_eq!(setting, "conditional_writes"),
        other => panic!("expected the conditional_writes advice, got {other:?}"),
    }
    // The probe left nothing behind.
    let listed: Vec<_> = futures_util::TryStreamExt::try_collect(private_storage::Storage::list(&storage, None)).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
