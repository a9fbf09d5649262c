//! 100 MB up and 100 MB down through the gateway with its memory flat. The gateway runs in this
//! process, so a sampler thread watching this process's resident set sees any buffering.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::support::yaml::{anonymous, server, Config};
use crate::support::{TestGateway, Upstream};

const HUNDRED_MB: u64 = 100 * 1024 * 1024;
const MAX_GROWTH_KB: u64 = 40 * 1024;

/// A request body of `remaining` bytes made up on the fly, 64 KiB at a time.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    fn new(len: u64) -> Generated {
        Generated {
            remaining: len,
            chunk: Bytes::from(vec![b'u'; 64 * 1024]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Samples this process's RSS every 5 ms until stopped; reports the peak.
struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    fn start() -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss_kb();
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kb())
        });
        RssPeak { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

async fn upload(gw: &TestGateway, len: u64) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("/upload/big")
        .header("host", "127.0.0.1")
        .body(Generated::new(len))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_both_ways_in_flat_memory() {
    let upstream = Upstream::start().await;
    let up = upstream.url();
    let gw = TestGateway::start(
        Config::new()
            .server(server().limits("max_body_bytes: 209715200"))
            .route(anonymous("upload", "/upload", &up))
            .route(anonymous("download", "/download", &up)),
    )
    .await;
    // Warm up pools, buffers and lazy statics so the baseline is fair.
    assert_eq!(upload(&gw, 1024 * 1024).await["body_len"], 1024 * 1024);

    let before = rss_kb();
    let sampler = RssPeak::start();
    let started = Instant::now();
    let echo = upload(&gw, HUNDRED_MB).await;
    let upload_time = started.elapsed();
    let peak = sampler.finish();
    let upload_growth = peak.saturating_sub(before);
    assert_eq!(echo["body_len"], HUNDRED_MB, "upstream counted every byte");
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KB,
        "upload grew RSS by {} kB (from {before} kB to a peak of {peak} kB)",
        peak - before
    );

    let before = rss_kb();
    let sampler = RssPeak::start();
    let started = Instant::now();
    let mut response = gw
        .client()
        .get(gw.url(&format!("/download/{HUNDRED_MB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert_eq!(chunk.first(), Some(&b'x'));
        received += chunk.len() as u64;
    }
    let download_time = started.elapsed();
    let peak = sampler.finish();
    assert_eq!(received, HUNDRED_MB);
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KB,
        "download grew RSS by {} kB (from {before} kB to a peak of {peak} kB)",
        peak - before
    );
    eprintln!(
        "100 MB upload {upload_time:?} (+{upload_growth} kB RSS), download {download_time:?} (+{} kB RSS)",
        peak.saturating_sub(before)
    );
    gw.stop().await;
}
