//! The blob store on a real S3-compatible server (`moto_server`, started
//! per test on a loopback port) and, for the benchmark, beside the folder
//! backend.

use stagecraft_orchestrator::blobs::{sha256_hex, BlobError, BlobStore};
use stagecraft_orchestrator::testing::S3;
use std::time::{Duration, Instant};

fn bucket(s3: &S3, name: &str, prefix: &str) -> BlobStore {
    s3.create_bucket(name);
    s3.store(&format!("s3://{name}/{prefix}")).unwrap()
}

#[tokio::test]
async fn s3_put_get_round_trip_idempotent_put_and_missing() {
    let s3 = S3::start();
    let store = bucket(&s3, "blobs", "cluster/a");
    assert_eq!(store.to_string(), "s3://blobs/cluster/a");
    let data = b"hello from s3".repeat(1000);
    let digest = store.put(&data).await.unwrap();
    assert_eq!(digest, sha256_hex(&data));
    assert_eq!(store.key(&digest).unwrap(), format!("cluster/a/{}/{digest}", &digest[..2]));
    assert!(store.contains(&digest).await.unwrap());
    assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&data[..]));
    // Idempotent: the same bytes again, and under the digest already known.
    assert_eq!(store.put(&data).await.unwrap(), digest);
    store.put_known(&digest, &data).await.unwrap();
    assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&data[..]));
    // Missing: None, not an error.
    let absent = sha256_hex(b"never stored");
    assert_eq!(store.get(&absent).await.unwrap(), None);
    assert!(!store.contains(&absent).await.unwrap());
    // Another prefix in the same bucket is another store.
    let other = s3.store("s3://blobs/cluster/b").unwrap();
    assert_eq!(other.get(&digest).await.unwrap(), None);
    // An empty blob is a blob.
    let empty = store.put(b"").await.unwrap();
    assert_eq!(store.get(&empty).await.unwrap().as_deref(), Some(&b""[..]));
}

#[tokio::test]
async fn s3_a_corrupted_object_is_never_served() {
    let s3 = S3::start();
    let store = bucket(&s3, "corrupt", "p");
    let data = b"the real bytes".to_vec();
    let digest = store.put(&data).await.unwrap();
    let key = store.key(&digest).unwrap();
    // Same size, other bytes, written straight through the S3 API.
    s3.put_object("corrupt", &key, b"THE REAL BYTES").await;
    assert_eq!(store.get(&digest).await.unwrap(), None, "a corrupt object was served");
    // Another size: the next put replaces it.
    s3.put_object("corrupt", &key, b"tampered, and longer than the blob").await;
    assert_eq!(store.get(&digest).await.unwrap(), None, "a corrupt object was served");
    store.put(&data).await.unwrap();
    assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&data[..]));
    // Above the bound: refused on the way in and on the way out.
    let small = s3.store("s3://corrupt/p").unwrap().with_max_bytes(8);
    assert!(matches!(small.get(&digest).await, Err(BlobError::TooLarge { max: 8, .. })));
    assert!(matches!(small.put(&data).await, Err(BlobError::TooLarge { .. })));
}

#[tokio::test]
async fn s3_hostile_names_and_locations_are_refused() {
    let s3 = S3::start();
    let store = bucket(&s3, "hostile", "");
    let digest = store.put(b"x").await.unwrap();
    for name in [
        "../../etc/passwd",
        "",
        "x",
        &digest.to_uppercase(),
        &format!("{}/..", &digest[..61]),
        &format!("{}\n", &digest[..63]),
        &format!("{digest}0"),
    ] {
        assert!(matches!(store.get(name).await, Err(BlobError::NotADigest(_))), "{name:?}");
        assert!(matches!(store.contains(name).await, Err(BlobError::NotADigest(_))), "{name:?}");
        assert!(matches!(store.put_known(name, b"x").await, Err(BlobError::NotADigest(_))), "{name:?}");
    }
    for location in ["s3://", "s3:///p", "s3://b/../etc", "s3://b/a//c", "ftp://b/p"] {
        assert!(matches!(s3.store(location), Err(BlobError::Location { .. })), "{location}");
    }
    // A bucket that does not exist holds nothing (S3 answers 404), and
    // writing there is an error.
    let nowhere = s3.store("s3://no-such-bucket").unwrap();
    assert_eq!(nowhere.get(&digest).await.unwrap(), None);
    assert!(nowhere.put(b"x").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_many_concurrent_puts_and_gets() {
    let s3 = S3::start();
    let store = bucket(&s3, "busy", "many");
    // 200 blobs, each put twice at once from different tasks, then all read at once.
    let blobs: Vec<Vec<u8>> =
        (0..200u32).map(|i| format!("blob {i} ").repeat(1 + i as usize * 37).into_bytes()).collect();
    let mut tasks = Vec::new();
    for data in blobs.iter().chain(&blobs) {
        let (store, data) = (store.clone(), data.clone());
        tasks.push(tokio::spawn(async move { store.put(&data).await.unwrap() }));
    }
    let mut digests = Vec::new();
    for t in tasks {
        digests.push(t.await.unwrap());
    }
    assert_eq!(digests[..200], digests[200..]);
    let mut tasks = Vec::new();
    for (digest, data) in digests.iter().zip(&blobs) {
        let (store, digest, data) = (store.clone(), digest.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&data[..]));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Put and get of 64 KiB and 4 MiB blobs, folder against S3 (moto on
/// loopback), side by side. `cargo test -p stagecraft-orchestrator --test
/// blobs -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_blob_stores() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let stores = [("folder", BlobStore::new(dir.path())), ("s3 (moto)", bucket(&s3, "bench", "b"))];
    println!("blob store put and get, one at a time (ops/s, p50 ms)");
    println!(
        "{:<10} {:>8} {:>6} {:>12} {:>10} {:>12} {:>10}",
        "store", "size", "ops", "put ops/s", "put p50", "get ops/s", "get p50"
    );
    for (size, n) in [(64usize << 10, 200usize), (4 << 20, 30)] {
        for (name, store) in &stores {
            // Distinct blobs, so every put writes (none is skipped as present).
            let blobs: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let mut b = vec![0u8; size];
                    noise(&mut b, (i as u64) << 32 | size as u64);
                    b
                })
                .collect();
            let (mut puts, mut gets, mut digests) = (Vec::new(), Vec::new(), Vec::new());
            let started = Instant::now();
            for b in &blobs {
                let t = Instant::now();
                digests.push(store.put(b).await.unwrap());
                puts.push(t.elapsed());
            }
            let put_total = started.elapsed();
            let started = Instant::now();
            for d in &digests {
                let t = Instant::now();
                assert!(store.get(d).await.unwrap().is_some());
                gets.push(t.elapsed());
            }
            let get_total = started.elapsed();
            println!(
                "{:<10} {:>8} {:>6} {:>12.1} {:>10.3} {:>12.1} {:>10.3}",
                name,
                if size < 1 << 20 { format!("{} KiB", size >> 10) } else { format!("{} MiB", size >> 20) },
                n,
                n as f64 / put_total.as_secs_f64(),
                p50(&mut puts),
                n as f64 / get_total.as_secs_f64(),
                p50(&mut gets),
            );
        }
    }
}

fn p50(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// Incompressible bytes from a seed (xorshift), so every blob differs.
fn noise(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}
