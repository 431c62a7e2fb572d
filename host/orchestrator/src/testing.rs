//! For tests (feature `testing`): a real S3-compatible server, `moto_server`
//! (PyPI `moto[server]`), on a free loopback port, killed when dropped.
//! Its objects live in the server's memory; it accepts any credentials.

use crate::blobs::{BlobResult, BlobStore};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `moto_server` on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    /// Starts one, and waits until it answers.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is installed (pip install \"moto[server]\")");
        let s3 = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s3.request("GET", "/", b"").is_err() {
            assert!(Instant::now() < deadline, "moto_server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        s3
    }

    /// Its endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `AWS_*` variables that point a client at it (for a worker
    /// process's environment, or [`BlobStore::open_with`]).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Creates a bucket (`PUT /<bucket>`).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"), b"").expect("creating a bucket");
        assert_eq!(status, 200, "creating bucket {bucket}");
    }

    /// A blob store on it at `location` (`s3://bucket/prefix`), configured
    /// by [`S3::env`] rather than this process's environment.
    pub fn store(&self, location: &str) -> BlobResult<BlobStore> {
        BlobStore::open_with(location, self.env())
    }

    /// Writes an object directly (a signed S3 `PUT` through `object_store`,
    /// past every blob store check): to corrupt one in a test.
    pub async fn put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        use object_store::ObjectStoreExt;
        let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
        for (name, value) in self.env() {
            builder = builder.with_config(name.to_ascii_lowercase().parse().unwrap(), value);
        }
        let client = builder.build().expect("an S3 client for moto");
        let key = object_store::path::Path::from(key);
        client.put(&key, data.to_vec().into()).await.expect("putting an object");
    }

    /// One unsigned HTTP/1.1 request on a fresh connection; the status code.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer);
        text.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:.80}")))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
