//! For tests (feature `testing`): a real `redis-server` on a free loopback
//! port, with AOF on, in a folder of its own, killed when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    fsync: &'static str,
}

impl Redis {
    /// Starts one with `appendfsync always`.
    pub fn start() -> Self {
        Self::start_with("always")
    }

    /// With `appendfsync` set to `fsync` (`always`, `everysec`).
    pub fn start_with(fsync: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = spawn(port, dir.path(), fsync);
        let redis = Self { child, port, dir, fsync };
        redis.wait_ready();
        redis
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(out) = Command::new("redis-cli").args(["-p", &self.port.to_string(), "PING"]).output() {
                if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// `kill -9`, then a fresh server on the same port and files.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn(self.port, self.dir.path(), self.fsync);
        self.wait_ready();
    }
}

fn spawn(port: u16, dir: &Path, fsync: &str) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", fsync, "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (Debian: redis-server)")
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
