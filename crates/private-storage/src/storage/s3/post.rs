//! Browser uploads straight to the bucket: SigV4 presigned POST policies
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>).
//!
//! The policy pins the exact key, the size range (`content-length-range`, enforced by the S3
//! server while the bytes arrive) and the declared content type. What the bytes really are is
//! checked afterwards by [`UploadPolicy::finalise_direct`](crate::UploadPolicy::finalise_direct).

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::Mac;
use serde_json::json;

use super::{Encryption, S3Storage};
use crate::upload::hex;
use crate::{Error, ObjectKey, Result};

/// What a presigned POST allows: one key, a size range, one content type, for a while.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostPolicy {
    /// The exact key the browser may write.
    pub key: ObjectKey,
    /// Fewest bytes accepted (default 1: an empty upload is refused).
    pub min_size: u64,
    /// Most bytes accepted; the S3 server refuses larger bodies itself.
    pub max_size: u64,
    /// The `Content-Type` the form must declare, if pinned.
    pub content_type: Option<String>,
    /// How long the form may be submitted (default: the storage's presign expiry).
    pub expires_in: Option<Duration>,
}

impl PostPolicy {
    /// A policy for `key` of at most `max_size` bytes.
    pub fn new(key: ObjectKey, max_size: u64) -> Self {
        Self { key, min_size: 1, max_size, content_type: None, expires_in: None }
    }

    /// Pins the declared content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets how long the form may be submitted.
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(expires_in);
        self
    }
}

/// A signed upload form: POST `multipart/form-data` to `url` with every field of `fields` (in
/// order) and then the `file` field last.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresignedPost {
    /// Where the form posts to (the bucket's URL).
    pub url: String,
    /// The form fields, in order; `file` must come after them.
    pub fields: Vec<(String, String)>,
    /// The key the object will have.
    pub key: ObjectKey,
}

impl S3Storage {
    /// Signs a form that lets a browser upload one object straight to the bucket, within
    /// `policy`. The object is untrusted until
    /// [`UploadPolicy::finalise_direct`](crate::UploadPolicy::finalise_direct) checked it.
    ///
    /// # Errors
    /// [`Error::Config`] for an SSE-C storage (a browser cannot send the customer key);
    /// [`Error::Storage`] if no credentials can be obtained.
    pub async fn presigned_post(&self, policy: &PostPolicy) -> Result<PresignedPost> {
        super::writable(&policy.key)?;
        if matches!(self.encryption, Encryption::Customer { .. }) {
            return Err(Error::config("encryption", "direct uploads cannot carry a customer key (SSE-C)"));
        }
        let credential = self.store.credentials().get_credential().await.map_err(|e| Error::storage("s3", e))?;
        let now = Utc::now();
        let expires_in = policy.expires_in.unwrap_or(self.presign_expiry);
        let expiration =
            now + chrono::Duration::from_std(expires_in).map_err(|e| Error::config("presign_expiry", e.to_string()))?;
        let date = now.format("%Y%m%d").to_string();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let key = self.path(&policy.key).to_string();

        let mut fields: Vec<(String, String)> = vec![("key".into(), key.clone())];
        if let Some(t) = &policy.content_type {
            fields.push(("Content-Type".into(), t.clone()));
        }
        match &self.encryption {
            Encryption::S3 => fields.push(("x-amz-server-side-encryption".into(), "AES256".into())),
            Encryption::Kms { key_id } => {
                fields.push(("x-amz-server-side-encryption".into(), "aws:kms".into()));
                fields.push(("x-amz-server-side-encryption-aws-kms-key-id".into(), key_id.clone()));
            }
            _ => {}
        }
        fields.push(("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()));
        fields.push(("x-amz-credential".into(), format!("{}/{scope}", credential.key_id)));
        fields.push(("x-amz-date".into(), amz_date));
        if let Some(token) = credential.token.as_ref().filter(|t| !t.is_empty()) {
            fields.push(("x-amz-security-token".into(), token.clone()));
        }

        let mut conditions =
            vec![json!({ "bucket": self.bucket }), json!(["content-length-range", policy.min_size, policy.max_size])];
        conditions.extend(fields.iter().map(|(name, value)| json!(["eq", format!("${name}"), value])));
        let document = json!({ "expiration": rfc3339_millis(expiration), "conditions": conditions });
        let encoded = base64::engine::general_purpose::STANDARD.encode(document.to_string());
        let signature = hex(&sign(&credential.secret_key, &date, &self.region, encoded.as_bytes()));
        fields.push(("policy".into(), encoded));
        fields.push(("x-amz-signature".into(), signature));
        Ok(PresignedPost { url: self.bucket_url(), fields, key: policy.key.clone() })
    }

    /// The bucket's URL, path-style on a custom endpoint.
    fn bucket_url(&self) -> String {
        match &self.endpoint {
            Some(endpoint) if self.virtual_hosted => endpoint.clone(),
            Some(endpoint) => format!("{}/{}", endpoint.trim_end_matches('/'), self.bucket),
            None => format!("https://{}.s3.{}.amazonaws.com", self.bucket, self.region),
        }
    }
}

fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// SigV4: the signing key derived from the secret for the day, region and service, applied to
/// `data` (the base64 policy of a form; the string to sign of a request).
pub(super) fn sign(secret: &str, date: &str, region: &str, data: &[u8]) -> Vec<u8> {
    let step = |key: &[u8], data: &[u8]| -> Vec<u8> {
        let mut mac = crate::share::mac(key);
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = step(&k_date, region.as_bytes());
    let k_service = step(&k_region, b"s3");
    let k_signing = step(&k_service, b"aws4_request");
    step(&k_signing, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the AWS documentation ("Example: Browser-based upload using HTTP
    /// POST (using AWS Signature Version 4)"): its policy, secret and date give its signature.
    #[test]
    fn signs_like_the_aws_documentation_example() {
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        let signature =
            hex(&sign("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20151229", "us-east-1", policy.as_bytes()));
        assert_eq!(signature, "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e");
    }
}
