//! Real distributed parts for the scale-out test, started on loopback and stopped when dropped:
//! a PostgreSQL cluster, a 3-node Garage cluster (replication factor 3), nginx.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const ACCESS_KEY: &str = "GK31c2f218a2e44f485b94239e";
pub const SECRET_KEY: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(command: &mut Command) -> String {
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

/// A PostgreSQL server of its own (PostgreSQL refuses to run as root: as root it runs as
/// the `postgres` user).
pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|p| p.join("initdb").exists())
        .expect("PostgreSQL is not installed: scripts/test.sh installs it")
}

impl Postgres {
    pub fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let as_postgres = |program: &str| {
            if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            }
        };
        if is_root() {
            let uid: u32 = run(Command::new("id").args(["-u", "postgres"])).trim().parse().unwrap();
            let gid: u32 = run(Command::new("id").args(["-g", "postgres"])).trim().parse().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        run(as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "ps", "--no-sync"])
            .stdout(Stdio::null()));
        let port = free_port();
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.path().display());
        run(as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "start"]));
        Self { url: format!("postgres://ps@127.0.0.1:{port}/postgres"), dir, bin }
    }

    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c.arg("-D").arg(data).args(["-m", "immediate", "stop"]).output();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn garage_program() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(home.map(|h| h.join("bin")))
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
        .expect("garage is not installed: scripts/test.sh installs it")
}

/// One node of a Garage cluster.
pub struct GarageNode {
    pub endpoint: String,
    config: PathBuf,
    child: Option<Child>,
}

impl GarageNode {
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
        self.child = Some(
            Command::new(garage_program())
                .arg("-c")
                .arg(&self.config)
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
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
        let mut c = Command::new(garage_program());
        c.arg("-c").arg(&self.config).env("RUST_LOG", "warn");
        c
    }
}

impl Drop for GarageNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Garage cluster of `n` nodes, one zone, replication factor `n`, with the test key and a
/// bucket `media` it may read and write.
pub struct GarageCluster {
    pub nodes: Vec<GarageNode>,
    _dir: tempfile::TempDir,
}

impl GarageCluster {
    pub async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = "5c".repeat(32);
        let mut nodes = Vec::new();
        for i in 0..n {
            let (api, rpc) = (free_port(), free_port());
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{r}/meta\"\ndata_dir = \"{r}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = {n}\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{api}\"\nroot_domain = \".s3.garage.localhost\"\n",
                    r = root.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(root.join("log")).unwrap();
            let child = Command::new(garage_program())
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            nodes.push(GarageNode { endpoint: format!("http://127.0.0.1:{api}"), config, child: Some(child) });
        }
        let cluster = Self { nodes, _dir: dir };
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
        run(first.cli().args(["bucket", "create", "media"]));
        run(first.cli().args(["bucket", "allow", "--read", "--write", "--owner", "media", "--key", "test"]));
        cluster
    }
}

/// Retries `f` until it gives a value (a condition wait on a peer starting up), for 30 s.
async fn retry<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "a peer did not come up");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// nginx balancing over `upstreams`, on its own port.
pub struct Nginx {
    pub addr: String,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Nginx {
    pub fn start(upstreams: &[std::net::SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let prefix = dir.path().display().to_string();
        let servers: String = upstreams.iter().map(|a| format!("server {a};\n")).collect();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon on;\nuser root;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n access_log off;\n client_body_temp_path {prefix}/body;\n proxy_temp_path {prefix}/proxy;\n fastcgi_temp_path {prefix}/fastcgi;\n uwsgi_temp_path {prefix}/uwsgi;\n scgi_temp_path {prefix}/scgi;\n upstream app {{\n{servers} }}\n server {{\n  listen 127.0.0.1:{port};\n  client_max_body_size 0;\n  location / {{ proxy_pass http://app; proxy_set_header Host $host; proxy_request_buffering off; }}\n }}\n}}\n"
            ),
        )
        .unwrap();
        run(Command::new(nginx_program()).arg("-c").arg(&conf).arg("-p").arg(dir.path()));
        Self { addr: format!("127.0.0.1:{port}"), dir, conf }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn nginx_program() -> &'static Path {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("nginx is not installed: scripts/test.sh installs it")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(nginx_program())
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(self.dir.path())
            .args(["-s", "stop"])
            .output();
    }
}
