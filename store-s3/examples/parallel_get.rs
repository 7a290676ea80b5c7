//! The baseline for `benches/s3.sh`: how fast the server hands out the
//! repository's chunk objects to a plain parallel GET, with no decoding,
//! hashing or writing. `restore` is measured against this.
//!
//!   parallel_get ENDPOINT BUCKET PREFIX [CONCURRENCY]
//!
//! Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::Client;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, bucket, prefix, rest @ ..] = args.as_slice() else {
        eprintln!("usage: parallel_get ENDPOINT BUCKET PREFIX [CONCURRENCY]");
        std::process::exit(2);
    };
    let concurrency: usize = rest.first().map_or(32, |c| c.parse().expect("a number"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let creds = Credentials::new(
            std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "env",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build();
        let client = Client::from_conf(config);
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{}/chunks/", prefix.trim_end_matches('/')))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                keys.push(o.key().unwrap().to_string());
            }
        }
        let keys = Arc::new(keys);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, keys, next, bucket) =
                (client.clone(), keys.clone(), next.clone(), bucket.clone());
            tasks.push(tokio::spawn(async move {
                let mut bytes = 0u64;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(key) = keys.get(i) else { return bytes };
                    let r = client
                        .get_object()
                        .bucket(&bucket)
                        .key(key)
                        .send()
                        .await
                        .unwrap();
                    bytes += r.body.collect().await.unwrap().into_bytes().len() as u64;
                }
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{{\"objects\": {}, \"bytes\": {total}, \"seconds\": {secs:.3}, \"mb_per_s\": {:.1}}}",
            keys.len(),
            total as f64 / secs / 1e6
        );
    });
}
