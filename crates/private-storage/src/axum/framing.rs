//! Bounds on the parts of a `multipart/form-data` body that the parser holds whole.
//!
//! multer streams a part's data, but buffers the preamble (everything before the first
//! boundary) and each part's header block until their end is found, re-scanning the buffer as
//! it grows: a body that never reaches its first boundary, or a part whose headers never end,
//! would fill memory up to the whole upload's size limit. [`Framing`] watches the bytes on
//! their way to the parser and cuts the body once either runs past [`MAX_PART_HEADERS`].
//!
//! The delimiters are those of RFC 2046 §5.1.1: `--boundary` opens the first part, CRLF
//! `--boundary` every later one, `--` after a delimiter closes the body, and a part's headers
//! end at the first empty line.

use memchr::memmem::Finder;

/// The longest preamble, and the longest header block of one part, an
/// [`UploadForm`](crate::UploadForm) accepts (browsers send no preamble and a few hundred
/// bytes of headers).
pub const MAX_PART_HEADERS: usize = 16 * 1024;

/// Where the body is, between delimiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` closes the body, anything else starts a part's headers.
    AfterDelimiter,
    /// In a part's header block, up to its empty line.
    Headers,
    /// In a part's data, up to the next delimiter: as long as the upload's own limit allows.
    Data,
    /// After the closing delimiter; the parser reads no further.
    Epilogue,
}

/// The framing state of one body; see the module docs.
pub(super) struct Framing {
    first: Finder<'static>,
    delimiter: Finder<'static>,
    headers_end: Finder<'static>,
    stage: Stage,
    /// Bytes seen since the stage began.
    since: usize,
    /// The last bytes of the previous chunk, too few to hold the pattern looked for, kept so
    /// that a pattern split across chunks is found.
    carry: Vec<u8>,
}

/// Why a body was cut; reported to the client as a bad upload.
#[derive(Debug, thiserror::Error)]
pub(super) enum FramingError {
    #[error("the form has no boundary within its first {} KiB", MAX_PART_HEADERS / 1024)]
    Preamble,
    #[error("a form part's headers are longer than {} KiB", MAX_PART_HEADERS / 1024)]
    Headers,
}

impl Framing {
    pub(super) fn new(boundary: &str) -> Self {
        Self {
            first: Finder::new(format!("--{boundary}").as_bytes()).into_owned(),
            delimiter: Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned(),
            headers_end: Finder::new(b"\r\n\r\n").into_owned(),
            stage: Stage::Preamble,
            since: 0,
            carry: Vec::new(),
        }
    }

    /// Follows the framing through `chunk`, the next bytes of the body.
    pub(super) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), FramingError> {
        while !chunk.is_empty() {
            if self.stage == Stage::Epilogue {
                return Ok(());
            }
            if self.stage == Stage::AfterDelimiter {
                // Two bytes decide; they may come one chunk at a time.
                let take = (2 - self.carry.len()).min(chunk.len());
                self.carry.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.carry.len() == 2 {
                    // Those two bytes may already be the CRLF of an empty header block: they
                    // stay in the carry, where the search for its end sees them.
                    self.stage = if self.carry == b"--" { Stage::Epilogue } else { Stage::Headers };
                    self.since = 2;
                }
                continue;
            }
            let finder = match self.stage {
                Stage::Preamble => &self.first,
                Stage::Headers => &self.headers_end,
                _ => &self.delimiter,
            };
            match find(finder, &self.carry, chunk) {
                Some(end) => {
                    self.since += end;
                    self.check()?;
                    self.stage = match self.stage {
                        Stage::Headers => Stage::Data,
                        _ => Stage::AfterDelimiter,
                    };
                    self.since = 0;
                    self.carry.clear();
                    chunk = &chunk[end..];
                }
                None => {
                    self.since += chunk.len();
                    self.check()?;
                    let keep = finder.needle().len() - 1;
                    self.carry.extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
                    let excess = self.carry.len().saturating_sub(keep);
                    self.carry.drain(..excess);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), FramingError> {
        match self.stage {
            Stage::Preamble if self.since > MAX_PART_HEADERS => Err(FramingError::Preamble),
            Stage::Headers if self.since > MAX_PART_HEADERS => Err(FramingError::Headers),
            _ => Ok(()),
        }
    }
}

/// Where in `chunk` the first match of `finder` ends, counting a match that begins in `carry`
/// (the previous chunk's last bytes, fewer than the pattern's length).
fn find(finder: &Finder<'_>, carry: &[u8], chunk: &[u8]) -> Option<usize> {
    let n = finder.needle().len();
    if !carry.is_empty() {
        let mut joined = carry.to_vec();
        joined.extend_from_slice(&chunk[..chunk.len().min(n - 1)]);
        if let Some(start) = finder.find(&joined) {
            return Some(start + n - carry.len());
        }
    }
    finder.find(chunk).map(|start| start + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\none\r\n--XyZ\r\n\
                        Content-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\n\r\n\
                        data with --XyZ inside\r\n--XyZ--\r\nepilogue";

    /// Feeds `body` in chunks of `size` bytes.
    fn feed(body: &[u8], size: usize) -> Result<Stage, FramingError> {
        let mut framing = Framing::new("XyZ");
        for chunk in body.chunks(size) {
            framing.feed(chunk)?;
        }
        Ok(framing.stage)
    }

    #[test]
    fn a_well_formed_body_is_followed_to_its_end_in_chunks_of_any_size() {
        for size in 1..=BODY.len() {
            assert_eq!(feed(BODY.as_bytes(), size).unwrap(), Stage::Epilogue, "chunks of {size}");
        }
    }

    #[test]
    fn an_empty_header_block_and_a_preamble_are_allowed() {
        let body = "a short preamble\r\n--XyZ\r\n\r\nno headers\r\n--XyZ--";
        for size in 1..=body.len() {
            assert_eq!(feed(body.as_bytes(), size).unwrap(), Stage::Epilogue, "chunks of {size}");
        }
    }

    #[test]
    fn endless_headers_and_preambles_are_cut_just_past_the_limit() {
        let mut headers = b"--XyZ\r\nX-Padding: ".to_vec();
        headers.resize(MAX_PART_HEADERS, b'a');
        assert_eq!(feed(&headers, 4096).unwrap(), Stage::Headers, "up to the limit");
        headers.resize(MAX_PART_HEADERS + 100, b'a');
        assert!(matches!(feed(&headers, 4096), Err(FramingError::Headers)));
        // The limit is per part: many parts of modest headers pass.
        let part = format!("--XyZ\r\nX-Padding: {}\r\n\r\nv\r\n", "p".repeat(MAX_PART_HEADERS / 2));
        let many = format!("{}--XyZ--", part.repeat(10));
        assert_eq!(feed(many.as_bytes(), 1000).unwrap(), Stage::Epilogue);

        let preamble = vec![b'-'; MAX_PART_HEADERS + 1];
        assert!(matches!(feed(&preamble, 4096), Err(FramingError::Preamble)));
    }

    #[test]
    fn part_data_is_not_limited() {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'\r', 10 * MAX_PART_HEADERS));
        body.extend_from_slice(b"\r\n--XyZ--");
        assert_eq!(feed(&body, 8192).unwrap(), Stage::Epilogue);
    }
}
