//! The stored form of an encrypted object (version 1): a fixed-size header, then the content
//! sealed in 64 KiB chunks.
//!
//! ```text
//! header (208 bytes)
//!   0..4    magic "PSEF"
//!   4       format version (1)
//!   5       log2 of the chunk size (16: 64 KiB)
//!   6..8    zero
//!   8..24   file id: 16 random bytes, fixed for the object's life
//!   24..116 key slot 0 ┐ each: KEK id length (1), KEK id (31, zero-padded), nonce (12),
//!   116..208 key slot 1 ┘ data key sealed under the KEK (32 + 16-byte tag); all zero = empty
//! chunk i (i = 0..n)
//!   AES-256-GCM under the data key of ≤ 64 KiB of content, + 16-byte tag
//!   nonce = i (u64, big-endian) ‖ last (1 byte: 1 for the final chunk) ‖ 0 0 0
//!   AAD   = i ‖ last ‖ header[0..24] ‖ the object's key
//! ```
//!
//! Every chunk but the last holds exactly 64 KiB; the last holds the rest (0 bytes only for an
//! empty object), so the stored size alone gives the content size, and the reader knows which
//! chunk must carry the final mark. A truncated object ends in a chunk that was not sealed as
//! last; reordered chunks carry another index; a chunk from another object, or a whole object
//! moved to another key, was sealed under another data key or for another key. The data key is
//! sealed with the header's first 24 bytes and the KEK id as AAD, so a changed header field
//! fails to unwrap. Two key slots let a rotation write the new wrap beside the old one and only
//! then clear the old, each step a single small write, so a crash in between leaves a readable
//! object (see `EncryptedStorage::rewrap`).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// An AES-256-GCM key (ring's: AES-NI/VAES and carry-less multiplication in assembly).
pub(super) type Aes256Gcm = LessSafeKey;

/// An AES-256-GCM key from its 32 bytes.
pub(super) fn aes_256_gcm(key: &[u8; 32]) -> Aes256Gcm {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"))
}

pub(super) const MAGIC: &[u8; 4] = b"PSEF";
pub(super) const VERSION: u8 = 1;
pub(super) const CHUNK_SHIFT: u8 = 16;
/// The content bytes per chunk.
pub(super) const CHUNK: u64 = 1 << CHUNK_SHIFT;
pub(super) const TAG: u64 = 16;
/// A chunk as stored: content + tag.
pub(super) const SEALED_CHUNK: u64 = CHUNK + TAG;
const FIXED: usize = 24;
/// The longest KEK id, in bytes.
pub(super) const MAX_KEY_ID: usize = 31;
const SLOT: usize = 1 + MAX_KEY_ID + 12 + 32 + 16;
pub(super) const HEADER: u64 = (FIXED + 2 * SLOT) as u64;

/// The content size of an object stored in `stored` bytes, or `None` when no object of this
/// format has that size (cut in its header, or in a last chunk's tag).
pub(super) fn content_len(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(HEADER)?;
    let chunks = body.div_ceil(SEALED_CHUNK).max(1);
    let last = body.checked_sub((chunks - 1) * SEALED_CHUNK)?;
    (last >= TAG).then(|| body - chunks * TAG)
}

/// The stored size of an object of `len` content bytes.
pub(super) fn stored_len(len: u64) -> u64 {
    HEADER + len + chunk_count(len) * TAG
}

/// How many chunks hold `len` content bytes (an empty object has one, empty).
pub(super) fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK).max(1)
}

/// Where chunk `index` starts in the stored object.
pub(super) fn chunk_offset(index: u64) -> u64 {
    HEADER + index * SEALED_CHUNK
}

/// The parsed header.
#[derive(Clone)]
pub(super) struct Header {
    /// The first 24 bytes: magic, version, chunk size, file id.
    fixed: [u8; FIXED],
    slots: [Option<Slot>; 2],
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) key_id: String,
    nonce: [u8; 12],
    sealed: [u8; 48],
}

/// Why a header cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderError {
    NotEncrypted,
    Version(u8),
    Malformed,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::NotEncrypted => f.write_str("not an encrypted object (no header)"),
            HeaderError::Version(v) => write!(f, "encrypted with an unknown format version {v}"),
            HeaderError::Malformed => f.write_str("malformed encryption header"),
        }
    }
}

impl Header {
    /// A header for a new object with a fresh file id, wrapping `data_key` under `kek`.
    pub(super) fn new(kek_id: &str, kek: &Aes256Gcm, data_key: &[u8; 32]) -> Self {
        let mut fixed = [0u8; FIXED];
        fixed[..4].copy_from_slice(MAGIC);
        fixed[4] = VERSION;
        fixed[5] = CHUNK_SHIFT;
        fill_random(&mut fixed[8..24]);
        let mut header = Header { fixed, slots: [None, None] };
        header.slots[0] = Some(header.seal_slot(kek_id, kek, data_key));
        header
    }

    pub(super) fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < HEADER as usize || &bytes[..4] != MAGIC {
            return Err(HeaderError::NotEncrypted);
        }
        if bytes[4] != VERSION {
            return Err(HeaderError::Version(bytes[4]));
        }
        if bytes[5] != CHUNK_SHIFT || bytes[6..8] != [0, 0] {
            return Err(HeaderError::Malformed);
        }
        let fixed: [u8; FIXED] = bytes[..FIXED].try_into().expect("length checked");
        let slot = |i: usize| -> Result<Option<Slot>, HeaderError> {
            let raw = &bytes[FIXED + i * SLOT..FIXED + (i + 1) * SLOT];
            if raw.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let len = raw[0] as usize;
            let id = &raw[1..1 + MAX_KEY_ID];
            if len == 0 || len > MAX_KEY_ID || id[len..].iter().any(|&b| b != 0) {
                return Err(HeaderError::Malformed);
            }
            let key_id = std::str::from_utf8(&id[..len]).map_err(|_| HeaderError::Malformed)?.to_owned();
            let rest = &raw[1 + MAX_KEY_ID..];
            Ok(Some(Slot {
                key_id,
                nonce: rest[..12].try_into().expect("slot layout"),
                sealed: rest[12..].try_into().expect("slot layout"),
            }))
        };
        Ok(Header { fixed, slots: [slot(0)?, slot(1)?] })
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER as usize);
        out.extend_from_slice(&self.fixed);
        for i in 0..2 {
            out.extend_from_slice(&self.slot_bytes(i));
        }
        out
    }

    /// The stored bytes of slot `i` (zeros when empty), and where they go in the header.
    pub(super) fn slot_bytes(&self, i: usize) -> [u8; SLOT] {
        let mut raw = [0u8; SLOT];
        if let Some(slot) = &self.slots[i] {
            raw[0] = slot.key_id.len() as u8;
            raw[1..1 + slot.key_id.len()].copy_from_slice(slot.key_id.as_bytes());
            raw[1 + MAX_KEY_ID..1 + MAX_KEY_ID + 12].copy_from_slice(&slot.nonce);
            raw[1 + MAX_KEY_ID + 12..].copy_from_slice(&slot.sealed);
        }
        raw
    }

    pub(super) fn slot_offset(i: usize) -> u64 {
        (FIXED + i * SLOT) as u64
    }

    pub(super) fn slots(&self) -> &[Option<Slot>; 2] {
        &self.slots
    }

    pub(super) fn set_slot(&mut self, i: usize, slot: Option<Slot>) {
        self.slots[i] = slot;
    }

    /// Seals `data_key` under `kek` for one of this header's slots.
    pub(super) fn seal_slot(&self, kek_id: &str, kek: &Aes256Gcm, data_key: &[u8; 32]) -> Slot {
        assert!(!kek_id.is_empty() && kek_id.len() <= MAX_KEY_ID, "KEK ids are checked by the keyring");
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        let mut sealed = [0u8; 48];
        sealed[..32].copy_from_slice(data_key);
        let (body, tag) = sealed.split_at_mut(32);
        let t = kek
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(self.slot_aad(kek_id)), body)
            .expect("32 bytes are within AES-GCM's limits");
        tag.copy_from_slice(t.as_ref());
        Slot { key_id: kek_id.to_owned(), nonce, sealed }
    }

    /// The data key of `slot`, if `kek` is the key it was sealed under and nothing changed.
    pub(super) fn open_slot(&self, slot: &Slot, kek: &Aes256Gcm) -> Option<[u8; 32]> {
        let mut sealed = slot.sealed;
        let opened = kek.open_in_place(
            Nonce::assume_unique_for_key(slot.nonce),
            Aad::from(self.slot_aad(&slot.key_id)),
            &mut sealed,
        );
        let key = opened.ok()?.try_into().ok();
        sealed.zeroize();
        key
    }

    fn slot_aad(&self, kek_id: &str) -> Vec<u8> {
        [&self.fixed[..], kek_id.as_bytes()].concat()
    }

    /// The sealing or opening of this object's chunks under `data_key`, for `key`.
    pub(super) fn chunks(&self, data_key: &[u8; 32], key: &str) -> ChunkCipher {
        let mut aad = Vec::with_capacity(9 + FIXED + key.len());
        aad.extend_from_slice(&[0; 9]);
        aad.extend_from_slice(&self.fixed);
        aad.extend_from_slice(key.as_bytes());
        ChunkCipher { cipher: aes_256_gcm(data_key), aad }
    }

    /// The random id fixed at the object's first write.
    #[cfg(any(test, feature = "tus"))]
    pub(super) fn file_id(&self) -> &[u8] {
        &self.fixed[8..24]
    }
}

/// Seals or opens the chunks of one object.
pub(super) struct ChunkCipher {
    cipher: Aes256Gcm,
    /// `index ‖ last ‖ header[0..24] ‖ key`, the first 9 bytes rewritten per chunk.
    aad: Vec<u8>,
}

impl ChunkCipher {
    fn nonce_and_aad(&mut self, index: u64, last: bool) -> Nonce {
        self.aad[..8].copy_from_slice(&index.to_be_bytes());
        self.aad[8] = u8::from(last);
        let mut nonce = [0u8; 12];
        nonce[..9].copy_from_slice(&self.aad[..9]);
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypts `content` (at most one chunk) in place and returns its tag.
    pub(super) fn seal(&mut self, index: u64, last: bool, content: &mut [u8]) -> [u8; TAG as usize] {
        let nonce = self.nonce_and_aad(index, last);
        let tag = self
            .cipher
            .seal_in_place_separate_tag(nonce, Aad::from(&self.aad), content)
            .expect("a chunk is within AES-GCM's limits");
        tag.as_ref().try_into().expect("16-byte tag")
    }

    /// Checks and decrypts a stored chunk (content + tag) in place; on success the first
    /// `len - 16` bytes are the content. Nothing is decrypted unless the tag holds.
    pub(super) fn open(&mut self, index: u64, last: bool, buf: &mut [u8]) -> bool {
        if buf.len() < TAG as usize {
            return false;
        }
        let nonce = self.nonce_and_aad(index, last);
        self.cipher.open_in_place(nonce, Aad::from(&self.aad), buf).is_ok()
    }
}

use zeroize::Zeroize;

pub(super) fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_both_ways_and_impossible_sizes_are_refused() {
        for len in [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7, 1 << 30] {
            assert_eq!(content_len(stored_len(len)), Some(len), "len {len}");
        }
        // Shorter than a header, a header alone, a last chunk shorter than its tag.
        for stored in [0, HEADER - 1, HEADER, HEADER + 15, HEADER + SEALED_CHUNK + 1, HEADER + SEALED_CHUNK + 15] {
            assert_eq!(content_len(stored), None, "stored {stored}");
        }
    }

    #[test]
    fn the_header_round_trips_and_binds_its_fields() {
        let kek = aes_256_gcm(&[7u8; 32]);
        let data_key = [9u8; 32];
        let header = Header::new("k1", &kek, &data_key);
        let bytes = header.to_bytes();
        assert_eq!(bytes.len() as u64, HEADER);
        let parsed = Header::parse(&bytes).unwrap();
        assert_eq!(parsed.file_id(), header.file_id());
        let slot = parsed.slots()[0].clone().unwrap();
        assert_eq!(slot.key_id, "k1");
        assert_eq!(parsed.open_slot(&slot, &kek), Some(data_key));
        assert_eq!(parsed.open_slot(&slot, &aes_256_gcm(&[8u8; 32])), None, "another KEK");
        // Any change to the fixed part (here the file id) fails the unwrap.
        let mut tampered = bytes.clone();
        tampered[10] ^= 1;
        let other = Header::parse(&tampered).unwrap();
        assert_eq!(other.open_slot(&other.slots()[0].clone().unwrap(), &kek), None);
        assert_eq!(Header::parse(&bytes[..100]).err(), Some(HeaderError::NotEncrypted));
        let mut future = bytes;
        future[4] = 2;
        assert_eq!(Header::parse(&future).err(), Some(HeaderError::Version(2)));
    }

    #[test]
    fn a_chunk_opens_only_at_its_index_with_its_final_mark_for_its_key() {
        let kek = aes_256_gcm(&[1u8; 32]);
        let header = Header::new("k", &kek, &[2u8; 32]);
        let mut sealed = b"secret content".to_vec();
        let tag = header.chunks(&[2u8; 32], "a/b.txt").seal(3, true, &mut sealed);
        sealed.extend_from_slice(&tag);
        let try_open = |index, last, key: &str, data_key: [u8; 32]| {
            let mut buf = sealed.clone();
            header.chunks(&data_key, key).open(index, last, &mut buf).then(|| buf[..buf.len() - 16].to_vec())
        };
        assert_eq!(try_open(3, true, "a/b.txt", [2; 32]).as_deref(), Some(&b"secret content"[..]));
        assert_eq!(try_open(2, true, "a/b.txt", [2; 32]), None, "another index");
        assert_eq!(try_open(3, false, "a/b.txt", [2; 32]), None, "not the final mark");
        assert_eq!(try_open(3, true, "a/c.txt", [2; 32]), None, "another key");
        assert_eq!(try_open(3, true, "a/b.txt", [3; 32]), None, "another data key");

        // The format as documented, checked with another implementation (RustCrypto's).
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&3u64.to_be_bytes());
        nonce[8] = 1;
        let aad = [&nonce[..9], &header.to_bytes()[..24], b"a/b.txt"].concat();
        let oracle = aes_gcm::Aes256Gcm::new(&[2u8; 32].into());
        let opened =
            oracle.decrypt(&nonce.into(), Payload { msg: &sealed, aad: &aad }).expect("the documented nonce and AAD");
        assert_eq!(opened, b"secret content");
    }
}
