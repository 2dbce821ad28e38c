//! Virus scanning with clamd, ClamAV's daemon, over its `INSTREAM` command (feature `clamav`).
//!
//! [`Clamd`] sends a whole stream — a file from any [`Storage`], or any byte stream — to clamd
//! and returns its [`Verdict`]. The protocol (clamd(8), "INSTREAM") is small: the command
//! `zINSTREAM\0`, then the data in chunks each prefixed by its length as four bytes in network
//! order, then a chunk of length zero; clamd answers one NUL-terminated line,
//! `stream: OK`, `stream: <signature> FOUND`, or `<reason> ERROR`.
//!
//! A stream longer than clamd's `StreamMaxLength` is cut off by clamd, which answers
//! `INSTREAM size limit exceeded`: that is [`Verdict::TooLarge`], never a pass — clamd saw only
//! a prefix. What to do with such a file is the caller's decision.
//!
//! ```no_run
//! use private_storage::scan::{Clamd, Verdict};
//!
//! # async fn run() -> Result<(), private_storage::scan::ScanError> {
//! let clamd = Clamd::new("127.0.0.1:3310".parse()?);
//! match clamd.scan_bytes(b"hello").await? {
//!     Verdict::Clean => println!("clean"),
//!     Verdict::Infected { signature } => println!("infected: {signature}"),
//!     Verdict::TooLarge => println!("larger than clamd's StreamMaxLength: not scanned"),
//!     _ => println!("a verdict this version does not know: no pass"),
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{GetOptions, ObjectKey, Storage};

/// The most data sent in one `INSTREAM` chunk (larger reads are split).
const CHUNK: usize = 256 * 1024;
/// The longest reply line read from clamd.
const MAX_REPLY: usize = 4096;

/// Where clamd listens: `host:port` (`TCPSocket`) or a Unix socket (`LocalSocket`), written
/// `unix:/run/clamav/clamd.ctl` or as an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// A TCP address, `host:port`.
    Tcp(String),
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl FromStr for ClamdAddress {
    type Err = ScanError;

    fn from_str(s: &str) -> Result<Self, ScanError> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(ClamdAddress::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(ClamdAddress::Unix(PathBuf::from(s)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(ClamdAddress::Tcp(s.to_owned()))
            }
            _ => Err(ScanError::Address(format!(
                "{s:?} is not a clamd address: write host:port (127.0.0.1:3310) or unix:/path/to/clamd.ctl"
            ))),
        }
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClamdAddress::Tcp(address) => f.write_str(address),
            ClamdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What clamd found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// No signature matched the whole stream.
    Clean,
    /// A signature matched.
    Infected {
        /// The signature's name as clamd reports it (`Eicar-Test-Signature`, say).
        signature: String,
    },
    /// The stream is longer than clamd accepts (`StreamMaxLength`): it was not scanned whole.
    TooLarge,
}

/// Why a scan gave no verdict. None of these is a pass: the file is still unscanned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A clamd address that cannot be parsed.
    #[error("{0}")]
    Address(String),
    /// clamd cannot be reached, or the connection failed or timed out.
    #[error("clamd at {address} does not answer: {source}")]
    Unavailable {
        /// Where clamd was expected.
        address: ClamdAddress,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Reading the data to scan failed (the storage's error).
    #[error("the file to scan could not be read: {0}")]
    Source(#[source] crate::Error),
    /// clamd answered, but with an error or something this client does not understand.
    #[error("clamd answered {0:?}")]
    Scanner(String),
}

/// A clamd client. Cheap to clone; each scan opens its own connection.
#[derive(Debug, Clone)]
pub struct Clamd {
    address: ClamdAddress,
    timeout: Duration,
}

impl Clamd {
    /// A client of clamd at `address`, with a 60-second timeout on each read and write.
    pub fn new(address: ClamdAddress) -> Self {
        Self { address, timeout: Duration::from_secs(60) }
    }

    /// Sets how long one read from or write to clamd may take (a scan as a whole may take
    /// longer). Keep it under clamd's own `ReadTimeout` (120 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where this client connects.
    pub fn address(&self) -> &ClamdAddress {
        &self.address
    }

    /// Whether clamd answers (`PING` → `PONG`).
    ///
    /// # Errors
    /// [`ScanError::Unavailable`] when it does not; [`ScanError::Scanner`] for another answer.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let mut connection = self.connect().await?;
        let reply = async {
            connection.write_all(b"zPING\0").await?;
            read_reply(&mut connection).await
        };
        match self.limit(reply).await? {
            reply if reply == "PONG" => Ok(()),
            other => Err(ScanError::Scanner(other)),
        }
    }

    /// Scans `data`.
    ///
    /// # Errors
    /// As [`Clamd::scan`].
    pub async fn scan_bytes(&self, data: &[u8]) -> Result<Verdict, ScanError> {
        let chunk = Bytes::copy_from_slice(data);
        self.scan(futures_util::stream::once(async move { Ok(chunk) })).await
    }

    /// Scans the object `key` of `storage`, all of it.
    ///
    /// # Errors
    /// [`ScanError::Source`] when the object cannot be read; otherwise as [`Clamd::scan`].
    pub async fn scan_object(&self, storage: &dyn Storage, key: &ObjectKey) -> Result<Verdict, ScanError> {
        // Connect first: with clamd down, the storage is not read for nothing.
        let connection = self.connect().await?;
        let object = storage.get(key, GetOptions::default()).await.map_err(ScanError::Source)?;
        self.scan_on(connection, object.into_stream()).await
    }

    /// Scans a stream to its end.
    ///
    /// # Errors
    /// [`ScanError::Unavailable`] when clamd cannot be reached or stops answering,
    /// [`ScanError::Source`] when the stream fails, [`ScanError::Scanner`] when clamd answers
    /// an error.
    pub async fn scan<S>(&self, data: S) -> Result<Verdict, ScanError>
    where
        S: Stream<Item = crate::Result<Bytes>> + Send,
    {
        let connection = self.connect().await?;
        self.scan_on(connection, data).await
    }

    async fn scan_on<S>(&self, mut connection: Connection, data: S) -> Result<Verdict, ScanError>
    where
        S: Stream<Item = crate::Result<Bytes>> + Send,
    {
        let mut data = std::pin::pin!(data);
        self.limit(connection.write_all(b"zINSTREAM\0")).await?;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(ScanError::Source)?;
            for piece in chunk.chunks(CHUNK) {
                // clamd answers as soon as a stream passes its limit, then closes: read that
                // answer before writing more, or a reset may discard it.
                if let Some(reply) = futures_util::FutureExt::now_or_never(read_reply(&mut connection)) {
                    return parse_verdict(
                        reply.map_err(|source| ScanError::Unavailable { address: self.address.clone(), source })?,
                    );
                }
                let len = u32::try_from(piece.len()).expect("a chunk under 4 GiB").to_be_bytes();
                let sent =
                    self.limit(async { connection.write_all(&len).await.and(connection.write_all(piece).await) });
                if let Err(e) = sent.await {
                    // clamd stops reading and answers once a stream passes its limit: its
                    // answer says why the write failed.
                    return match self.limit(read_reply(&mut connection)).await {
                        Ok(reply) => parse_verdict(reply),
                        Err(_) => Err(e),
                    };
                }
            }
        }
        let reply = async {
            connection.write_all(&0u32.to_be_bytes()).await?;
            connection.flush().await?;
            read_reply(&mut connection).await
        };
        parse_verdict(self.limit(reply).await?)
    }

    async fn connect(&self) -> Result<Connection, ScanError> {
        let connect = async {
            Ok(match &self.address {
                ClamdAddress::Tcp(address) => {
                    let stream = tokio::net::TcpStream::connect(address.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Connection::Tcp(stream)
                }
                ClamdAddress::Unix(path) => Connection::Unix(tokio::net::UnixStream::connect(path).await?),
            })
        };
        self.limit(connect).await
    }

    /// `step` within the timeout, its failure as [`ScanError::Unavailable`].
    async fn limit<T>(&self, step: impl Future<Output = io::Result<T>>) -> Result<T, ScanError> {
        let unavailable = |source| ScanError::Unavailable { address: self.address.clone(), source };
        match tokio::time::timeout(self.timeout, step).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))),
        }
    }
}

/// clamd's answer to `INSTREAM` (clamd(8)).
fn parse_verdict(reply: String) -> Result<Verdict, ScanError> {
    if reply == "stream: OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(signature) = reply.strip_prefix("stream: ").and_then(|r| r.strip_suffix(" FOUND")) {
        return Ok(Verdict::Infected { signature: signature.to_owned() });
    }
    if reply.starts_with("INSTREAM size limit exceeded") {
        return Ok(Verdict::TooLarge);
    }
    Err(ScanError::Scanner(reply))
}

/// One NUL-terminated reply line (the `z` form of the commands), at most [`MAX_REPLY`] bytes.
async fn read_reply(connection: &mut (impl AsyncRead + Unpin)) -> io::Result<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = connection.read(&mut buf).await?;
        if n == 0 {
            if reply.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "clamd closed the connection"));
            }
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "clamd's answer is too long"));
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

enum Connection {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Connection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Connection::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Connection::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Connection::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Connection::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_tcp_or_unix() {
        assert_eq!("127.0.0.1:3310".parse::<ClamdAddress>().unwrap(), ClamdAddress::Tcp("127.0.0.1:3310".into()));
        assert_eq!("[::1]:3310".parse::<ClamdAddress>().unwrap(), ClamdAddress::Tcp("[::1]:3310".into()));
        assert_eq!(
            "unix:/run/clamav/clamd.ctl".parse::<ClamdAddress>().unwrap(),
            ClamdAddress::Unix("/run/clamav/clamd.ctl".into())
        );
        assert_eq!("/run/clamd.sock".parse::<ClamdAddress>().unwrap(), ClamdAddress::Unix("/run/clamd.sock".into()));
        for bad in ["", "localhost", "host:", ":3310", "host:0", "host:99999", "clamd.sock"] {
            let e = bad.parse::<ClamdAddress>().unwrap_err();
            assert!(e.to_string().contains("host:port"), "{bad}: {e}");
        }
        assert_eq!(ClamdAddress::Unix("/a".into()).to_string(), "unix:/a");
    }

    #[test]
    fn replies_map_to_verdicts_and_nothing_else_passes() {
        assert_eq!(parse_verdict("stream: OK".into()).unwrap(), Verdict::Clean);
        assert_eq!(
            parse_verdict("stream: Eicar-Test-Signature FOUND".into()).unwrap(),
            Verdict::Infected { signature: "Eicar-Test-Signature".into() }
        );
        assert_eq!(parse_verdict("INSTREAM size limit exceeded. ERROR".into()).unwrap(), Verdict::TooLarge);
        for other in ["", "stream: ", "OK", "stream: OKAY", "Can't allocate memory ERROR", "stream: x FOUND!"] {
            assert!(matches!(parse_verdict(other.into()), Err(ScanError::Scanner(_))), "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_reply_is_read_to_its_nul_and_bounded() {
        let mut reply: &[u8] = b"stream: OK\0trailing";
        assert_eq!(read_reply(&mut reply).await.unwrap(), "stream: OK");
        let mut endless: &[u8] = &[b'a'; MAX_REPLY + 300];
        assert_eq!(read_reply(&mut endless).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut closed: &[u8] = b"";
        assert_eq!(read_reply(&mut closed).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
