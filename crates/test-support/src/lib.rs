//! What both crates' integration tests share: the real peers they start on loopback — nginx,
//! PostgreSQL, Garage (one node or a cluster), clamd — stopped when dropped, and a collected HTTP
//! [`Reply`]. The peers are installed by `scripts/test.sh`; a missing one fails the test with
//! a message saying so, never skips it.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// The access key the Garage peers know.
pub const ACCESS_KEY: &str = "GK31c2f218a2e44f485b94239e";
/// Its secret.
pub const SECRET_KEY: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835";
/// The bucket the Garage peers create, readable and writable with the key.
pub const BUCKET: &str = "media";
/// Garage's region.
pub const GARAGE_REGION: &str = "garage";

/// A collected response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The name and value of the cookie `base` or `__Host-<base>` this reply sets.
    pub fn prefixed_cookie(&self, base: &str) -> Option<(String, String)> {
        let secure = format!("__Host-{base}");
        self.cookie(&secure).map(|v| (secure, v)).or_else(|| self.cookie(base).map(|v| (base.to_owned(), v)))
    }

    /// The value a `Set-Cookie` of this reply gives `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            let (k, value) = v.split(';').next()?.split_once('=')?;
            (k == name).then(|| value.to_owned())
        })
    }
}

/// A free loopback port (bound, then released for a peer process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The path of a program the test script installs (Debian's folders, `PATH`, then where
/// `cargo install` puts it); a clear failure when it is missing.
pub fn program(name: &str) -> PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()))
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: scripts/test.sh installs the real peers the tests need"))
}

/// Runs a command to its end; its standard output, or a failure with everything it said.
pub fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// Retries `f` until it gives a value — a condition wait on a peer starting up — for 30 s.
pub async fn retry<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "a peer did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something accepts connections on `port`, for daemons whose start command returns
/// before they listen. Bounded: fails after 10 s.
pub async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port} after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daemon started by a test, stopped (with the command given) when dropped.
pub struct Peer {
    pub name: &'static str,
    pub log: PathBuf,
    pub stop: Command,
}

impl Peer {
    /// Runs `start` (a command that daemonizes) and fails with the daemon's log if it fails.
    pub fn start(name: &'static str, mut start: Command, stop: Command, log: PathBuf) -> Self {
        let out = start.output().unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        let peer = Peer { name, log, stop };
        assert!(
            out.status.success(),
            "{name} failed to start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            peer.log_text()
        );
        peer
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.stop.output();
    }
}

/// nginx in the folder `dir` with `http` inside its `http` block (after the mime types, temp
/// paths and logs of a test instance); stopped when dropped.
pub fn nginx_with(dir: &Path, http: &str) -> Peer {
    let prefix = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon on;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{http}
}}
"
        ),
    )
    .unwrap();
    let nginx = program("nginx");
    let mut start = Command::new(&nginx);
    start.arg("-c").arg(&conf).arg("-p").arg(dir);
    let mut stop = Command::new(&nginx);
    stop.arg("-c").arg(&conf).arg("-p").arg(dir).args(["-s", "stop"]);
    // nginx binds its sockets before it daemonizes: once `start` returns, it listens.
    Peer::start("nginx", start, stop, dir.join("error.log"))
}

/// nginx in `dir` listening on `port` with `locations` inside its `server` block.
pub fn nginx(dir: &Path, port: u16, locations: &str) -> Peer {
    nginx_with(dir, &format!("    server {{\n        listen 127.0.0.1:{port};\n{locations}\n    }}"))
}

/// A PostgreSQL server of its own (PostgreSQL refuses to run as root: as root it runs as
/// the `postgres` user).
pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Self {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort();
        let bin = versions
            .pop()
            .filter(|p| p.join("initdb").exists())
            .expect("PostgreSQL is not installed: scripts/test.sh installs it");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let uid: u32 = run(Command::new("id").args(["-u", "postgres"])).trim().parse().unwrap();
            let gid: u32 = run(Command::new("id").args(["-g", "postgres"])).trim().parse().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut this = Self { url: String::new(), dir, bin };
        run(this
            .as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "ps", "--no-sync"])
            .stdout(Stdio::null()));
        let port = free_port();
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", this.dir.path().display());
        let log = this.dir.path().join("log");
        run(this
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(log)
            .args(["-w", "start"]));
        this.url = format!("postgres://ps@127.0.0.1:{port}/postgres");
        this
    }

    fn as_postgres(&self, program: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        }
    }

    /// Stops the server at once (as a crash would).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = self.as_postgres("pg_ctl").arg("-D").arg(data).args(["-m", "immediate", "stop"]).output();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node of a Garage cluster.
pub struct GarageNode {
    pub endpoint: String,
    config: PathBuf,
    child: Option<Child>,
}

impl GarageNode {
    fn spawn(config: &Path, log: std::fs::File) -> Child {
        Command::new(program("garage"))
            .arg("-c")
            .arg(config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("garage starts")
    }

    /// Stops the node (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again on its data (after [`GarageNode::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        let log = std::fs::OpenOptions::new().append(true).open(self.config.with_file_name("log")).unwrap();
        self.child = Some(Self::spawn(&self.config, log));
    }

    /// What the node logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("log")).unwrap_or_default()
    }

    /// The bucket's `unfinishedMultipartUploads` counter, once the node answers.
    pub async fn unfinished_uploads(&self, bucket: &str) -> i64 {
        let request = format!("{{\"globalAlias\":\"{bucket}\"}}");
        let out = retry(|| {
            self.cli().args(["json-api", "GetBucketInfo", &request]).output().ok().filter(|o| o.status.success())
        })
        .await;
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        info["unfinishedMultipartUploads"].as_i64().unwrap()
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(program("garage"));
        c.arg("-c").arg(&self.config).env("RUST_LOG", "warn");
        c
    }
}

impl Drop for GarageNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Garage cluster of `n` nodes, one zone, replication factor `n`, with the test key and the
/// bucket [`BUCKET`] it may read and write.
pub struct GarageCluster {
    pub nodes: Vec<GarageNode>,
    _dir: tempfile::TempDir,
}

impl GarageCluster {
    pub async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = "5c".repeat(32);
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for i in 0..n {
            let (api, rpc) = (free_port(), free_port());
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{r}/meta\"\ndata_dir = \"{r}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = {n}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"{GARAGE_REGION}\"\napi_bind_addr = \"127.0.0.1:{api}\"\nroot_domain = \".s3.garage.localhost\"\n",
                    r = root.display()
                ),
            )
            .unwrap();
            let child = GarageNode::spawn(&config, std::fs::File::create(root.join("log")).unwrap());
            nodes.push(GarageNode { endpoint: format!("http://127.0.0.1:{api}"), config, child: Some(child) });
            ports.push((rpc, api));
        }
        let cluster = Self { nodes, _dir: dir };
        // `node id` answers from the key file before the node listens: wait until it does.
        for (rpc, api) in ports {
            wait_for_port(rpc).await;
            wait_for_port(api).await;
        }
        // Node ids, once each node answers on its RPC port.
        let mut ids = Vec::new();
        for node in &cluster.nodes {
            ids.push(
                retry(|| {
                    node.cli()
                        .args(["node", "id", "-q"])
                        .output()
                        .ok()
                        .filter(|o| o.status.success())
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                })
                .await,
            );
        }
        let first = &cluster.nodes[0];
        for id in &ids[1..] {
            retry(|| first.cli().args(["node", "connect", id]).output().ok().filter(|o| o.status.success())).await;
        }
        for id in &ids {
            let short = id.split('@').next().unwrap();
            run(first.cli().args(["layout", "assign", "-z", "dc1", "-c", "1G", short]));
        }
        run(first.cli().args(["layout", "apply", "--version", "1"]));
        run(first.cli().args(["key", "import", ACCESS_KEY, SECRET_KEY, "-n", "test", "--yes"]));
        run(first.cli().args(["bucket", "create", BUCKET]));
        run(first.cli().args(["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "test"]));
        cluster
    }
}

/// The EICAR anti-virus test file (68 bytes): harmless, and detected by every scanner.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// A body signature of the tests' own: a file holding these bytes anywhere is infected with
/// [`MARKER_SIGNATURE`].
pub const MARKER: &[u8] = b"PS-TEST-MARKER-7f3a9c1e5d";
/// The name clamd reports for [`MARKER`].
pub const MARKER_SIGNATURE: &str = "PrivateStorageTest.Marker.UNOFFICIAL";

/// clamd from Debian's `clamav-daemon`, on a loopback port and a Unix socket, with a signature
/// database the test writes (no download is possible here): EICAR by its MD5, and [`MARKER`]
/// as a body signature at any offset. Killed when dropped.
pub struct Clamd {
    pub port: u16,
    pub socket: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Clamd {
    /// Starts clamd accepting streams of up to `stream_max` bytes (`StreamMaxLength`), and
    /// waits until it answers `PING`.
    pub async fn start(stream_max: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let eicar_md5 = md5_hex(EICAR);
        std::fs::write(db.join("test.hdb"), format!("{eicar_md5}:{}:Eicar-Test-Signature\n", EICAR.len())).unwrap();
        let hex: String = MARKER.iter().map(|b| format!("{b:02x}")).collect();
        let name = MARKER_SIGNATURE.trim_end_matches(".UNOFFICIAL");
        std::fs::write(db.join("test.ndb"), format!("{name}:0:*:{hex}\n")).unwrap();
        let port = free_port();
        let socket = dir.path().join("clamd.sock");
        let config = dir.path().join("clamd.conf");
        std::fs::write(
            &config,
            format!(
                "DatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {socket}\nForeground yes\n\
                 LogFile {log}\nStreamMaxLength {stream_max}\nMaxFileSize {stream_max}\nMaxScanSize {stream_max}\n",
                db = db.display(),
                socket = socket.display(),
                log = dir.path().join("clamd.log").display(),
            ),
        )
        .unwrap();
        let mut clamd = Self { port, socket, config, child: None, _dir: dir };
        clamd.restart().await;
        clamd
    }

    /// Stops clamd (as a crash would): connections are refused until [`Clamd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts clamd again on the same port and socket, and waits until it answers `PING`.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "clamd is running");
        let child = Command::new(program("clamd"))
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers_ping().await {
            assert!(Instant::now() < deadline, "clamd did not answer PING within 60 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn answers_ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        let mut reply = [0u8; 5];
        stream.write_all(b"zPING\0").await.is_ok() && stream.read_exact(&mut reply).await.is_ok() && &reply == b"PONG\0"
    }

    /// What clamd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("clamd.log")).unwrap_or_default()
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `md5sum`'s answer for `data` (clamd's hash signatures are MD5s).
fn md5_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("md5sum runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}
