//! The real peers of the server tests: those of `test-support` (PostgreSQL, Garage), and nginx
//! balancing over several server instances.

pub use test_support::{ACCESS_KEY, GarageCluster, GarageNode, Postgres, SECRET_KEY};

/// nginx balancing over `upstreams`, on its own port.
pub struct Nginx {
    pub addr: String,
    peer: test_support::Peer,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[std::net::SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = test_support::free_port();
        let servers: String = upstreams.iter().map(|a| format!("        server {a};\n")).collect();
        let http = format!(
            "    upstream app {{\n{servers}    }}\n    server {{\n        listen 127.0.0.1:{port};\n        client_max_body_size 0;\n        location / {{ proxy_pass http://app; proxy_set_header Host $host; proxy_request_buffering off; }}\n    }}"
        );
        let peer = test_support::nginx_with(dir.path(), &http);
        Self { addr: format!("127.0.0.1:{port}"), peer, _dir: dir }
    }

    pub fn log(&self) -> String {
        self.peer.log_text()
    }
}
