//! The guarded upload stream: counts bytes (cutting off past the limit) and hashes as it goes.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::Error;
use crate::storage::PutStream;

/// The sniffed `head` followed by the `rest` of an upload, failing with [`Error::TooLarge`] as
/// soon as more than `limit` bytes went through. When the stream ends cleanly, its size and
/// hex SHA-256 are sent on `done`. Memory stays bounded by the chunks passing through.
pub(crate) fn guarded<'a>(
    head: Bytes,
    rest: PutStream<'a>,
    limit: Option<u64>,
    done: oneshot::Sender<(u64, String)>,
) -> PutStream<'a> {
    let all = stream::once(async move { Ok(head) }).chain(rest).boxed();
    stream::unfold(Some((all, 0u64, Sha256::new(), done)), move |state| async move {
        let (mut all, size, mut hasher, done) = state?;
        match all.next().await {
            Some(Ok(chunk)) => {
                let size = size + chunk.len() as u64;
                if let Some(limit) = limit.filter(|&l| size > l) {
                    return Some((Err(Error::TooLarge { limit }), None));
                }
                hasher.update(&chunk);
                Some((Ok(chunk), Some((all, size, hasher, done))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => {
                let _ = done.send((size, hex(&hasher.finalize())));
                None
            }
        }
    })
    .boxed()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn chunks(n: usize, size: usize) -> PutStream<'static> {
        stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![b'x'; size])))).boxed()
    }

    #[tokio::test]
    async fn a_stream_within_the_limit_passes_and_reports_size_and_digest() {
        let (tx, rx) = oneshot::channel();
        let out: Vec<Bytes> =
            guarded(Bytes::from_static(b"ab"), chunks(2, 3), Some(8), tx).try_collect().await.unwrap();
        assert_eq!(out.concat(), b"abxxxxxx");
        let (size, digest) = rx.await.unwrap();
        assert_eq!(size, 8);
        assert_eq!(digest, hex(&Sha256::digest(b"abxxxxxx")));
    }

    #[tokio::test]
    async fn the_stream_is_cut_off_at_the_first_chunk_past_the_limit() {
        let (tx, rx) = oneshot::channel();
        let mut s = guarded(Bytes::new(), chunks(1000, 1000), Some(2500), tx);
        let mut passed = 0;
        let err = loop {
            match s.next().await.expect("an error before the end") {
                Ok(c) => passed += c.len(),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::TooLarge { limit: 2500 }), "{err}");
        assert_eq!(passed, 2000, "bytes past the limit are never passed on");
        assert!(s.next().await.is_none(), "nothing after the error");
        assert!(rx.await.is_err(), "no digest for a refused upload");
    }
}
