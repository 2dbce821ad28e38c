//! The share-link token: a compact binary claim set, HMAC-SHA256-signed, base64url-encoded.
//!
//! Layout (all integers big-endian; strings are `u16` length + UTF-8):
//! `version (1) | key id (u8 len + ASCII) | target kind (1) | target | expires (u64 s) |
//! disposition (1) [| filename] | user tag flag (1) [| tag (16)] | link id (16) | epoch (u32) |
//! HMAC-SHA256 of everything before it (32)`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::ShareTarget;
use crate::{ContentDisposition, ObjectKey};

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const LINK_ID_LEN: usize = 16;
/// Tokens longer than this are refused before decoding.
const MAX_TOKEN: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// What a token says, once its signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    pub(crate) target: ShareTarget,
    pub(crate) expires: u64,
    pub(crate) disposition: Option<ContentDisposition>,
    pub(crate) user_tag: Option<[u8; TAG_LEN]>,
    pub(crate) link_id: [u8; LINK_ID_LEN],
    pub(crate) epoch: u32,
}

pub(crate) fn mac(secret: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// The tag that binds a link to a user without putting the user's id in the token.
pub(crate) fn user_tag(secret: &[u8], user_id: &str) -> [u8; TAG_LEN] {
    let mut m = mac(secret);
    m.update(b"private-storage share user\0");
    m.update(user_id.as_bytes());
    let full = m.finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

pub(crate) fn encode(key_id: &str, secret: &[u8], claims: &Claims) -> String {
    let mut out = vec![VERSION, key_id.len() as u8];
    out.extend_from_slice(key_id.as_bytes());
    let (kind, target) = match &claims.target {
        ShareTarget::Key(key) => (1u8, key.as_str()),
        ShareTarget::Record(id) => (2u8, id.as_str()),
    };
    out.push(kind);
    put_str(&mut out, target);
    out.extend_from_slice(&claims.expires.to_be_bytes());
    match &claims.disposition {
        None => out.push(0),
        Some(d) => {
            let kind = if d.is_attachment() { 2 } else { 1 };
            match d.filename() {
                Some(name) => {
                    out.push(kind | 0x80);
                    put_str(&mut out, name);
                }
                None => out.push(kind),
            }
        }
    }
    match &claims.user_tag {
        Some(tag) => {
            out.push(1);
            out.extend_from_slice(tag);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&claims.link_id);
    out.extend_from_slice(&claims.epoch.to_be_bytes());
    let mut m = mac(secret);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(out)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Why a token was not accepted. Only [`Refusal::Expired`] is ever told to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    TooLong,
    Revoked,
    WrongUser,
}

/// The key id of a token, read before the signature is checked (to pick the key).
pub(crate) fn key_id(token: &str) -> Result<(String, Vec<u8>), Refusal> {
    if token.len() > MAX_TOKEN {
        return Err(Refusal::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| Refusal::Malformed)?;
    let (&version, rest) = bytes.split_first().ok_or(Refusal::Malformed)?;
    let (&len, rest) = rest.split_first().ok_or(Refusal::Malformed)?;
    if version != VERSION || rest.len() < len as usize {
        return Err(Refusal::Malformed);
    }
    let id = std::str::from_utf8(&rest[..len as usize]).map_err(|_| Refusal::Malformed)?.to_owned();
    Ok((id, bytes))
}

/// Checks the signature of a decoded token with `secret` (constant time), then parses it.
pub(crate) fn verify(bytes: &[u8], secret: &[u8]) -> Result<Claims, Refusal> {
    if bytes.len() < MAC_LEN {
        return Err(Refusal::Malformed);
    }
    let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    let mut m = mac(secret);
    m.update(signed);
    m.verify_slice(tag).map_err(|_| Refusal::BadSignature)?;
    parse(signed).ok_or(Refusal::Malformed)
}

fn parse(signed: &[u8]) -> Option<Claims> {
    let mut r = Reader(signed);
    let _version = r.u8()?;
    let id_len = r.u8()?;
    r.take(id_len as usize)?;
    let target = match r.u8()? {
        1 => ShareTarget::Key(ObjectKey::new(r.str()?).ok()?),
        2 => ShareTarget::Record(r.str()?.to_owned()),
        _ => return None,
    };
    let expires = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let d = r.u8()?;
    let disposition = match d & 0x7f {
        0 => None,
        kind @ (1 | 2) => {
            let base = if kind == 2 { ContentDisposition::attachment() } else { ContentDisposition::inline() };
            Some(if d & 0x80 != 0 { base.with_filename(r.str()?) } else { base })
        }
        _ => return None,
    };
    let user_tag = match r.u8()? {
        0 => None,
        1 => Some(r.take(TAG_LEN)?.try_into().ok()?),
        _ => return None,
    };
    let link_id = r.take(LINK_ID_LEN)?.try_into().ok()?;
    let epoch = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    r.0.is_empty().then_some(Claims { target, expires, disposition, user_tag, link_id, epoch })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
}
