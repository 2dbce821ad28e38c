//! Multipart bodies through `UploadForm` and an `UploadPolicy`: any body gets 200, 400, 413 or
//! 415, never a panic; what is stored fits the policy and lies inside its folder, and nothing
//! is stored for a refusal.
#![no_main]
use std::sync::OnceLock;

use axum::extract::FromRequest;
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use private_storage::{Error, MemoryStorage, SavedFile, Storage, UploadForm, UploadPolicy};

const ALLOWED: [&str; 3] = ["application/pdf", "image/png", "text/plain"];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

async fn upload(policy: &UploadPolicy, body: Vec<u8>) -> Result<SavedFile, Error> {
    let request = http::Request::post("/")
        .header("content-type", "multipart/form-data; boundary=B")
        .body(axum::body::Body::from(body))
        .unwrap();
    let mut form = UploadForm::from_request(request, &()).await?;
    while let Some(field) = form.next_field().await? {
        if field.name() == Some("file") {
            return policy.save(&(), field.into_upload()).await;
        }
    }
    Err(Error::BadUpload { message: "no file field".into() })
}

fuzz_target!(|body: Vec<u8>| {
    let storage = MemoryStorage::new();
    let policy = UploadPolicy::new(storage.clone()).upload_to("up").content_types(ALLOWED).max_file_size(2048);
    let (result, stored) = runtime().block_on(async {
        let result = upload(&policy, body).await;
        (result, storage.list(None).count().await)
    });
    match result {
        Ok(saved) => {
            assert!(saved.key.as_str().starts_with("up/") && saved.key.segments().count() == 2, "{}", saved.key);
            assert!((1..=2048).contains(&saved.size), "{}", saved.size);
            assert!(ALLOWED.contains(&saved.content_type.as_str()), "{}", saved.content_type);
            assert_eq!(stored, 1);
        }
        Err(e) => {
            assert!([400, 413, 415].contains(&e.status().as_u16()), "{e}");
            assert_eq!(stored, 0, "nothing stored for a refusal");
        }
    }
});
