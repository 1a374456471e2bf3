//! Upload load generator for bench/server.sh: keep-alive HTTP/1.1 clients posting hardware lists,
//! reporting throughput and latency percentiles.
//!
//! - `loadgen config DIR PROFILES` writes the bench config (fixture::bench_config) and prints the
//!   path of its edeploy.conf.
//! - `loadgen run ADDR PATH CONCURRENCY SECONDS PROFILES`: **closed loop**, CONCURRENCY clients
//!   each sending its next request as soon as the previous answer arrives. The server sets the
//!   pace, so the mean latency is CONCURRENCY / throughput by construction (Little's law).
//! - `loadgen open ADDR PATH RATE SECONDS PROFILES [CONNECTIONS]`: **open loop**, requests
//!   scheduled at a fixed RATE per second (request i at start + i/RATE) whatever the server does,
//!   on CONNECTIONS keep-alive connections (default 64). Latency runs from the *scheduled* send
//!   time, so a request that waited for a free connection because the server fell behind counts
//!   that wait (no coordinated omission). `late_ms` is the longest a request left behind its
//!   schedule, `unsent` how many scheduled requests never left before the end of the run: when
//!   either is large, the offered rate was not sustained.
//! - `loadgen count ADDR PATH CONCURRENCY REQUESTS PROFILES`: closed loop for a fixed number of
//!   requests (to profile a server under valgrind: a count, not a duration).
//! - `loadgen inproc CONF REQUESTS PROFILES [THREADS]`: no HTTP, `Server::handle` called in this
//!   process from THREADS threads (default 1), to profile the pipeline alone.
//!
//! `run`/`open`/`count` print one line:
//! `requests=N errors=N seconds=S rps=R p50_ms=A p90_ms=B p99_ms=C max_ms=D`, and for `open`
//! ` offered=O unsent=U late_ms=L`.
//! Only 200 answers count as requests; anything else is an error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edeploy_server::fixture;
use edeploy_server::multipart::encode;
use edeploy_server::pipeline::{Request, Server};

// The server's allocator: `inproc` then costs what the server's pipeline costs, and the
// generator takes less of the CPU it shares with the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BOUNDARY: &str = "----edeploy-loadgen";
const CONTENT_TYPE: &str = "multipart/form-data; boundary=----edeploy-loadgen";

fn usage() -> ! {
    eprintln!(
        "usage: loadgen config DIR PROFILES\n       \
         loadgen run ADDR PATH CONCURRENCY SECONDS PROFILES\n       \
         loadgen open ADDR PATH RATE SECONDS PROFILES [CONNECTIONS]\n       \
         loadgen count ADDR PATH CONCURRENCY REQUESTS PROFILES\n       \
         loadgen inproc CONF REQUESTS PROFILES [THREADS]"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

/// The multipart body of machine `m`: product `prod<m % profiles>`, so machines spread over every
/// profile. Machines cycle over a bounded set: re-uploads rewrite the same .hw files.
fn body(m: u32, profiles: u32) -> Vec<u8> {
    let hw = fixture::hw_json(&format!("prod{}", m % profiles), &fixture::mac(m));
    encode(BOUNDARY, &[("file", Some("hw.json"), hw.as_bytes())])
}

/// Reads one response; returns its status and whether the server closes the connection. Handles
/// Content-Length and chunked bodies.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut len, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf)?;
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = len {
        let mut buf = vec![0; n];
        r.read_exact(&mut buf)?;
    } else {
        let mut sink = Vec::new();
        r.read_to_end(&mut sink)?;
        close = true;
    }
    Ok((status, close))
}

/// One keep-alive connection, reopened after an error or a `Connection: close`.
struct Client {
    addr: SocketAddr,
    path: String,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    fn new(addr: SocketAddr, path: &str) -> Client {
        Client {
            addr,
            path: path.to_string(),
            conn: None,
        }
    }

    /// Posts one body; true when the answer was a 200.
    fn post(&mut self, body: &[u8]) -> bool {
        let result = (|| -> std::io::Result<(u16, bool)> {
            if self.conn.is_none() {
                let s = TcpStream::connect(self.addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                self.conn = Some((s.try_clone()?, BufReader::new(s)));
            }
            let (w, r) = self.conn.as_mut().expect("connected above");
            let mut req = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\n\
                 Content-Length: {}\r\n\r\n",
                self.path,
                self.addr,
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(body);
            w.write_all(&req)?;
            read_response(r)
        })();
        match result {
            Ok((status, close)) => {
                if close {
                    self.conn = None;
                }
                status == 200
            }
            Err(_) => {
                self.conn = None;
                false
            }
        }
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Closed loop: send, wait for the answer, send the next, until `stop` or `limit` requests.
fn closed_worker(
    mut c: Client,
    id: u32,
    profiles: u32,
    stop: &AtomicBool,
    limit: &AtomicU64,
    errors: &AtomicU64,
) -> Vec<u32> {
    let mut lat_us = Vec::new();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let taken = limit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        if taken.is_err() {
            break;
        }
        let b = body(id * 1000 + n % 1000, profiles);
        n += 1;
        let t0 = Instant::now();
        if c.post(&b) {
            lat_us.push(micros(t0.elapsed()));
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    lat_us
}

/// Open loop: take the next slot of the schedule, wait for its time, send. A worker that comes
/// back late takes an overdue slot and sends at once; the latency still counts from the slot's
/// scheduled time.
fn open_worker(
    mut c: Client,
    profiles: u32,
    schedule: &Schedule,
    errors: &AtomicU64,
) -> (Vec<u32>, Duration) {
    let mut lat_us = Vec::new();
    let mut late = Duration::ZERO;
    loop {
        let i = schedule.next.fetch_add(1, Ordering::Relaxed);
        if i >= schedule.total {
            break;
        }
        let due = schedule.start + Duration::from_secs_f64(i as f64 / schedule.rate);
        let now = Instant::now();
        if now > schedule.end {
            // The run is over and this request never left: counted as unsent, not waited for.
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        } else {
            late = late.max(now - due);
        }
        // Machines cycle over 50,000 names, as the closed loop's 50 clients × 1,000.
        let b = body((i % 50_000) as u32, profiles);
        if c.post(&b) {
            lat_us.push(micros(due.elapsed()));
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    (lat_us, late)
}

struct Schedule {
    start: Instant,
    /// When the offered load stops: requests still unsent then are reported as `unsent`.
    end: Instant,
    rate: f64,
    total: u64,
    next: AtomicU64,
}

fn report(mut lat: Vec<u32>, errors: u64, elapsed: f64) -> String {
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            f64::from(lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]) / 1000.0
        }
    };
    format!(
        "requests={} errors={errors} seconds={elapsed:.2} rps={:.0} p50_ms={:.2} p90_ms={:.2} \
         p99_ms={:.2} max_ms={:.2}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
    )
}

/// Closed loop for `secs` seconds or `count` requests, whichever comes first.
fn closed(addr: SocketAddr, path: &str, conc: u32, secs: f64, count: u64, profiles: u32) {
    let stop = AtomicBool::new(false);
    let limit = AtomicU64::new(count);
    let errors = AtomicU64::new(0);
    let t0 = Instant::now();
    let lat: Vec<u32> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..conc)
            .map(|i| {
                let (stop, limit, errors) = (&stop, &limit, &errors);
                let c = Client::new(addr, path);
                sc.spawn(move || closed_worker(c, i, profiles, stop, limit, errors))
            })
            .collect();
        if secs.is_finite() {
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
        }
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    println!("{}", report(lat, errors.load(Ordering::Relaxed), elapsed));
}

fn open(addr: SocketAddr, path: &str, rate: f64, secs: f64, profiles: u32, conns: u32) {
    let errors = AtomicU64::new(0);
    // Connections are opened before the clock starts: the first requests do not pay for them.
    let clients: Vec<Client> = (0..conns)
        .map(|_| {
            let mut c = Client::new(addr, path);
            let s = TcpStream::connect(addr).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            c.conn = Some((s.try_clone().expect("clone"), BufReader::new(s)));
            c
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(20);
    let schedule = Schedule {
        start,
        end: start + Duration::from_secs_f64(secs),
        rate,
        total: (rate * secs) as u64,
        next: AtomicU64::new(0),
    };
    let (lat, late) = std::thread::scope(|sc| {
        let hs: Vec<_> = clients
            .into_iter()
            .map(|c| {
                let (schedule, errors) = (&schedule, &errors);
                sc.spawn(move || open_worker(c, profiles, schedule, errors))
            })
            .collect();
        let mut lat = Vec::new();
        let mut late = Duration::ZERO;
        for h in hs {
            let (l, w) = h.join().unwrap();
            lat.extend(l);
            late = late.max(w);
        }
        (lat, late)
    });
    let elapsed = schedule.start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    let unsent = schedule.total - lat.len() as u64 - errors;
    println!(
        "{} offered={rate:.0} unsent={unsent} late_ms={:.1}",
        report(lat, errors, elapsed),
        late.as_secs_f64() * 1000.0
    );
}

/// The pipeline alone, no HTTP: what a request costs the server's own code.
fn inproc(conf: &Path, requests: u32, profiles: u32, threads: u32) {
    let server = Server::new(conf);
    server.recover("SERVER").expect("recover");
    let next = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..threads.max(1) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u64::from(requests) {
                    break;
                }
                let b = body(i as u32, profiles);
                let r = server.handle(
                    Request {
                        method: "POST",
                        path: "/upload",
                        content_type: CONTENT_TYPE,
                        body: &b,
                    },
                    true,
                );
                if r.status != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let s = t0.elapsed().as_secs_f64();
    println!(
        "requests={requests} errors={} seconds={s:.2} rps={:.0}",
        errors.load(Ordering::Relaxed),
        f64::from(requests) / s
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["config", dir, profiles] => {
            let conf = fixture::bench_config(Path::new(dir), arg(profiles)).expect("write config");
            println!("{}", conf.display());
        }
        ["run", addr, path, conc, secs, profiles] => {
            let p: u32 = arg(profiles);
            closed(arg(addr), path, arg(conc), arg(secs), u64::MAX, p.max(1));
        }
        ["count", addr, path, conc, n, profiles] => {
            let p: u32 = arg(profiles);
            closed(arg(addr), path, arg(conc), f64::INFINITY, arg(n), p.max(1));
        }
        ["open", addr, path, rate, secs, profiles, rest @ ..] if rest.len() <= 1 => {
            let p: u32 = arg(profiles);
            let conns = rest.first().map_or(64, |c| arg(c));
            open(arg(addr), path, arg(rate), arg(secs), p.max(1), conns);
        }
        ["inproc", conf, n, profiles, rest @ ..] if rest.len() <= 1 => {
            let p: u32 = arg(profiles);
            let threads = rest.first().map_or(1, |t| arg(t));
            inproc(Path::new(conf), arg(n), p.max(1), threads);
        }
        _ => usage(),
    }
}
