//! Storage and per-request hot paths.
//!
//! - `durable_commit/N`: N concurrent writers each commit one batch and wait
//!   until it is on disk (group commit: flushes are shared), per batch;
//! - `authenticate`: resolving an access token, done on every request;
//! - `record_codec`: encoding and decoding a stored record;
//! - `password_hash`: one argon2id hash (the cost of a login or registration).
//!
//! Run: `cargo bench --bench storage`. Figures in BENCHMARKS.md.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use conduit::{
    config::Config,
    storage::{
        codec::{decode_record, encode_record},
        records::{DeviceRecord, UserRecord},
        Batch, Storage,
    },
    users::Users,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn durable_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(dir.path(), 64 << 20).unwrap());
    let rt = runtime();
    let mut group = c.benchmark_group("durable_commit");
    group.sample_size(20);
    let mut next = 0u64;
    for writers in [1usize, 8, 64] {
        group.throughput(Throughput::Elements(writers as u64));
        group.bench_function(format!("{writers}_writers"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = Vec::with_capacity(writers);
                    for _ in 0..writers {
                        next += 1;
                        let storage = Arc::clone(&storage);
                        let key = format!("bench{next}");
                        tasks.push(tokio::spawn(async move {
                            let mut batch = Batch::new();
                            batch.insert(&storage.tables.users, &key, &UserRecord::new(None, 1, false, false)).unwrap();
                            storage.commit(batch).await.unwrap();
                        }));
                    }
                    for task in tasks {
                        task.await.unwrap();
                    }
                })
            })
        });
    }
    group.finish();
}

fn authenticate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(dir.path(), 64 << 20).unwrap());
    let config = Config::from_toml_with_env("server_name = \"bench.local\"", Vec::new()).unwrap();
    let users = Users::new(Arc::clone(&storage), &config);
    let rt = runtime();
    let token = rt.block_on(async {
        users.create_account("bench", Some("pw"), false, false).await.unwrap();
        users.open_session("bench", None, None, false, "127.0.0.1").await.unwrap().access_token
    });
    c.bench_function("authenticate", |b| b.iter(|| rt.block_on(users.authenticate(&token)).unwrap()));
}

fn record_codec(c: &mut Criterion) {
    let device = DeviceRecord {
        display_name: Some("Element on Firefox".into()),
        created_ts: 1_700_000_000_000,
        last_seen_ts: Some(1_700_000_000_000),
        last_seen_ip: Some("192.0.2.10".into()),
        token_hashes: vec![[7u8; 32], [8u8; 32]],
    };
    c.bench_function("record_codec/device_round_trip", |b| {
        b.iter(|| decode_record::<DeviceRecord>(&encode_record(&device).unwrap()).unwrap())
    });
}

fn password_hash(c: &mut Criterion) {
    let rt = runtime();
    let passwords = conduit::users::password::Passwords::default();
    let mut group = c.benchmark_group("password_hash");
    group.sample_size(10);
    group.bench_function("argon2id", |b| {
        b.iter_batched(|| (), |()| rt.block_on(passwords.hash("benchmark password")).unwrap(), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, durable_commit, authenticate, record_codec, password_hash);
criterion_main!(benches);
