//! Upstream faults and recovery: an upstream that goes away and comes back, resets mid-body,
//! answers garbage or never answers. Each is a 502/504 (or an aborted body once the head is
//! sent), the pool recovers, and a few hundred failures later the gateway holds no more sockets
//! than before: it runs in this process, so `/proc/self` sees both ends of every connection.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::closed_port;
use crate::support::yaml::{anonymous, server, Config};
use crate::support::{metric, TestGateway};

/// How a [`Faulty`] upstream treats each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `200 ok`, keep-alive.
    Ok,
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// Reads the request, then resets the connection without a word.
    ResetBeforeHead,
    /// A head promising 1 MiB, 64 KiB of it, then a reset.
    ResetMidBody,
    /// A chunked body that stops (clean FIN) before its last chunk.
    TruncatedChunked,
    /// Reads the request and never answers.
    Stall,
}

/// A hand-written HTTP/1.1 upstream on a fixed loopback port that can misbehave on demand and be
/// taken down (listener and every connection closed) and brought back on the same port.
struct Faulty {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicUsize>,
    running: Option<CancellationToken>,
}

impl Faulty {
    async fn start(mode: Mode) -> Faulty {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut faulty = Faulty {
            addr: listener.local_addr().expect("addr"),
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::default(),
            running: None,
        };
        faulty.serve(listener);
        faulty
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.running = Some(stop.clone());
        let (mode, requests) = (self.mode.clone(), self.requests.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (mode, requests, stop) = (mode.clone(), requests.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = connection(stream, mode, requests) => {}
                    }
                });
            }
        });
    }

    /// Closes the listener and every open connection: the upstream is gone.
    fn down(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
    }

    /// Listens again on the same port.
    async fn up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.down();
    }
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn connection(mut stream: TcpStream, mode: Arc<Mutex<Mode>>, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    while read_head(&mut stream, &mut buf).await {
        requests.fetch_add(1, Ordering::SeqCst);
        let mode = *mode.lock().expect("mode");
        match mode {
            Mode::Ok => {
                let ok =
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
            Mode::Garbage => {
                let _ = stream
                    .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 not http at all\r\n\r\n")
                    .await;
                return;
            }
            Mode::ResetBeforeHead => {
                let _ = stream.set_zero_linger();
                return;
            }
            Mode::ResetMidBody => {
                let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
                response.extend(std::iter::repeat_n(b'x', 64 * 1024));
                let _ = stream.write_all(&response).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.set_zero_linger();
                return;
            }
            Mode::TruncatedChunked => {
                let mut response =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n".to_vec();
                response.extend(std::iter::repeat_n(b'y', 0x4000));
                response.extend(b"\r\n");
                let _ = stream.write_all(&response).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.shutdown().await;
                return;
            }
            Mode::Stall => {
                // Silent, but gone as soon as the gateway hangs up (a socket left in CLOSE_WAIT
                // here would be this test's leak, not the gateway's).
                let mut sink = [0u8; 1024];
                let hang_up = async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
                let _ = tokio::time::timeout(Duration::from_secs(60), hang_up).await;
                return;
            }
        }
    }
}

/// One anonymous route `/name` per `(name, upstream)`, with 1 s request and connect timeouts.
fn faults_config(routes: &[(&str, String)]) -> Config {
    let timeouts = server().limits("request_timeout: 1s, upstream_connect_timeout: 1s");
    routes
        .iter()
        .fold(Config::new().server(timeouts), |c, (name, upstream)| {
            c.route(anonymous(name, &format!("/{name}"), upstream))
        })
}

fn upstream_errors(metrics: &str, route: &str, kind: &str) -> f64 {
    metric(
        metrics,
        &format!(r#"gateway_upstream_errors_total{{kind="{kind}",route="{route}"}}"#),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_the_upstream_comes_back() {
    let mut upstream = Faulty::start(Mode::Ok).await;
    let gw = TestGateway::start(faults_config(&[("flaky", upstream.url())])).await;
    let client = gw.client();
    let get = |path: &'static str| {
        let (client, url) = (client.clone(), gw.url(path));
        async move { client.get(url).send().await.expect("gateway answers") }
    };
    for _ in 0..3 {
        assert_eq!(get("/flaky/a").await.status(), 200);
    }

    // Gone: listener and the pooled keep-alive connections closed.
    upstream.down();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let r = get("/flaky/b").await;
        assert_eq!(r.status(), 502);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()["error"],
            "bad_gateway"
        );
    }
    let m = gw.metrics().await;
    assert!(upstream_errors(&m, "flaky", "connect") >= 1.0, "{m}");

    // Back: the very first request succeeds, no stale pooled connection is tried.
    upstream.up().await;
    let before = upstream.requests();
    for _ in 0..5 {
        let r = get("/flaky/c").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(upstream.requests(), before + 5);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_garbage_and_silence_are_502_504_and_the_gateway_stays_healthy() {
    let upstream = Faulty::start(Mode::Ok).await;
    let gw = TestGateway::start(faults_config(&[("up", upstream.url())])).await;
    let client = gw.client();
    let url = gw.url("/up/x");

    // The head went out before the fault: the client sees the body aborted, never cleanly short.
    for mode in [Mode::ResetMidBody, Mode::TruncatedChunked] {
        upstream.set(mode);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{mode:?}");
        let body = r.bytes().await;
        assert!(
            body.is_err(),
            "{mode:?}: the truncated body looked complete"
        );
    }

    upstream.set(Mode::Garbage);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 502);
    let m = gw.metrics().await;
    assert_eq!(upstream_errors(&m, "up", "protocol"), 1.0, "{m}");

    upstream.set(Mode::ResetBeforeHead);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 502);
    let m = gw.metrics().await;
    assert_eq!(upstream_errors(&m, "up", "reset"), 1.0, "{m}");

    upstream.set(Mode::Stall);
    let started = Instant::now();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    let m = gw.metrics().await;
    assert_eq!(upstream_errors(&m, "up", "timeout"), 1.0, "{m}");

    upstream.set(Mode::Ok);
    for _ in 0..3 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    let (status, _) = gw.admin_get("/healthz").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Connected (not listening) sockets of this process with either end on one of `ports`.
fn sockets_on(ports: &[u16]) -> usize {
    let inodes: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut count = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (f.get(1), f.get(2), f.get(3), f.get(9))
            else {
                continue;
            };
            let ends = [port_of(local), port_of(remote)];
            if *state != "0A"
                && inode.parse().is_ok_and(|i: u64| inodes.contains(&i))
                && ends.iter().flatten().any(|p| ports.contains(p))
            {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_failures_leak_no_sockets() {
    let garbage = Faulty::start(Mode::Garbage).await;
    let reset = Faulty::start(Mode::ResetBeforeHead).await;
    let mid_body = Faulty::start(Mode::ResetMidBody).await;
    let stall = Faulty::start(Mode::Stall).await;
    let gw = TestGateway::start(faults_config(&[
        ("refused", format!("http://127.0.0.1:{}", closed_port())),
        ("garbage", garbage.url()),
        ("reset", reset.url()),
        ("midbody", mid_body.url()),
        ("stall", stall.url()),
    ]))
    .await;
    let ports = [
        gw.addr.port(),
        garbage.addr.port(),
        reset.addr.port(),
        mid_body.addr.port(),
        stall.addr.port(),
    ];
    // Warm up every path once (lazy statics, the metrics families), then take the baseline.
    {
        let client = gw.client();
        for route in ["refused", "garbage", "reset", "midbody"] {
            if let Ok(r) = client.get(gw.url(&format!("/{route}/warm"))).send().await {
                let _ = r.bytes().await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = open_fds();
    let sockets_before = sockets_on(&ports);

    let client = gw.client();
    let mut tasks = tokio::task::JoinSet::new();
    // 16 requests held by a silent upstream until the 1 s request_timeout...
    for _ in 0..16 {
        let (client, url) = (client.clone(), gw.url("/stall/x"));
        tasks.spawn(async move {
            client
                .get(url)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        });
    }
    // ...while 400 others fail fast, 8 at a time.
    let routes = ["refused", "garbage", "reset", "midbody"];
    let mut failures = 0usize;
    for round in 0..50 {
        let mut batch = tokio::task::JoinSet::new();
        for i in 0..8 {
            let route = routes[(round * 8 + i) % routes.len()];
            let (client, url) = (client.clone(), gw.url(&format!("/{route}/{round}")));
            batch.spawn(async move {
                match client.get(url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_err(),
                    Ok(r) => r.status().is_server_error(),
                    // A cut response ends its client connection; reqwest may have picked that
                    // connection for this request as it closed. Still the upstream's failure.
                    Err(_) => true,
                }
            });
        }
        while let Some(failed) = batch.join_next().await {
            failures += usize::from(failed.expect("task"));
        }
    }
    assert_eq!(failures, 400, "every request failed as the upstream did");
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.expect("task"), 504);
    }
    let during = sockets_on(&ports);
    drop(client);

    // Both ends of every connection are in this process; give closes a moment to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut fds_after, mut sockets_after) = (open_fds(), sockets_on(&ports));
    while (sockets_after > sockets_before || fds_after > fds_before + 32)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (fds_after, sockets_after) = (open_fds(), sockets_on(&ports));
    }
    eprintln!(
        "416 failed requests: sockets on the test's ports {sockets_before} -> {during} (end of \
         loop) -> {sockets_after}; open fds {fds_before} -> {fds_after}"
    );
    assert!(
        sockets_after <= sockets_before,
        "sockets left open: {sockets_before} before, {sockets_after} after"
    );
    // Other tests share this process: allow for their own sockets, not for one per failure.
    assert!(
        fds_after <= fds_before + 32,
        "open fds grew from {fds_before} to {fds_after}"
    );
    let m = gw.metrics().await;
    for (route, kind) in [
        ("refused", "connect"),
        ("garbage", "protocol"),
        ("reset", "reset"),
        ("stall", "timeout"),
    ] {
        assert!(
            upstream_errors(&m, route, kind) >= 16.0,
            "{route}: {kind} not counted\n{m}"
        );
    }
    assert_eq!(gw.get("/refused/after", None).await.status(), 502);
    gw.stop().await;
}
