//! Upload load generator for bench/server.sh: many keep-alive HTTP/1.1 clients posting hardware
//! lists, reporting throughput and latency percentiles.
//!
//! `loadgen config DIR PROFILES` writes the bench config (fixture::bench_config);
//! `loadgen run ADDR PATH CONCURRENCY SECONDS PROFILES` drives a server and prints one line:
//! `requests=N errors=N seconds=S rps=R p50_ms=A p99_ms=B`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edeploy_server::fixture;
use edeploy_server::multipart::encode;

const BOUNDARY: &str = "----edeploy-loadgen";

fn usage() -> ! {
    eprintln!(
        "usage: loadgen config DIR PROFILES\n       loadgen run ADDR PATH CONCURRENCY SECONDS PROFILES"
    );
    std::process::exit(2)
}

/// Reads one response; returns its status. Handles Content-Length and chunked bodies.
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

fn worker(
    addr: SocketAddr,
    path: String,
    id: u32,
    profiles: u32,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
) -> Vec<u32> {
    let mut lat_us = Vec::new();
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Machines cycle over a bounded set: re-uploads rewrite the same .hw files.
        let m = id * 1000 + n % 1000;
        n += 1;
        let product = format!("prod{}", m % profiles);
        let hw = fixture::hw_json(&product, &fixture::mac(m));
        let body = encode(BOUNDARY, &[("file", Some("hw.json"), hw.as_bytes())]);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; \
             boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let t0 = Instant::now();
        let result = (|| -> std::io::Result<(u16, bool)> {
            if conn.is_none() {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                conn = Some((s.try_clone()?, BufReader::new(s)));
            }
            let (w, r) = conn.as_mut().expect("connected above");
            let mut req = head.into_bytes();
            req.extend_from_slice(&body);
            w.write_all(&req)?;
            read_response(r)
        })();
        match result {
            Ok((200, close)) => {
                lat_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if close {
                    conn = None;
                }
            }
            Ok((_, close)) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if close {
                    conn = None;
                }
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
    lat_us
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("config") if args.len() == 3 => {
            let n: usize = args[2].parse().unwrap_or_else(|_| usage());
            let conf = fixture::bench_config(Path::new(&args[1]), n).expect("write config");
            println!("{}", conf.display());
        }
        Some("run") if args.len() == 6 => {
            let addr: SocketAddr = args[1].parse().unwrap_or_else(|_| usage());
            let path = args[2].clone();
            let conc: u32 = args[3].parse().unwrap_or_else(|_| usage());
            let secs: f64 = args[4].parse().unwrap_or_else(|_| usage());
            let profiles: u32 = args[5].parse().unwrap_or_else(|_| usage());
            let stop = Arc::new(AtomicBool::new(false));
            let errors = Arc::new(AtomicU64::new(0));
            let t0 = Instant::now();
            let hs: Vec<_> = (0..conc)
                .map(|i| {
                    let (p, s, e) = (path.clone(), stop.clone(), errors.clone());
                    std::thread::spawn(move || worker(addr, p, i, profiles.max(1), s, e))
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
            let mut lat: Vec<u32> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
            let elapsed = t0.elapsed().as_secs_f64();
            lat.sort_unstable();
            let pct = |p: f64| {
                if lat.is_empty() {
                    0.0
                } else {
                    f64::from(lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]) / 1000.0
                }
            };
            println!(
                "requests={} errors={} seconds={elapsed:.2} rps={:.0} p50_ms={:.2} p99_ms={:.2}",
                lat.len(),
                errors.load(Ordering::Relaxed),
                lat.len() as f64 / elapsed,
                pct(0.50),
                pct(0.99)
            );
        }
        _ => usage(),
    }
}
