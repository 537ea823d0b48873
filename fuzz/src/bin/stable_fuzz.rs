//! Stable-Rust fallback fuzzer for machines without a nightly toolchain.
//!
//! Runs the same target functions as the libFuzzer entry points
//! (`cbt_fuzz::TARGETS`) over the seed corpus, then over random mutations of
//! it (xorshift-driven byte mutations, splices and a SIP/link-layer
//! dictionary) for a time budget. There is no coverage feedback: mutants are
//! kept at random so that mutations can stack.
//!
//! ```text
//! stable_fuzz TARGET [--seconds N] [--corpus DIR] [--artifacts DIR] [--seed S]
//!                    [--max-len BYTES] [--timeout SECONDS]
//! ```
//!
//! Exit status: 0 when nothing failed, 1 after a panic (the input is saved as
//! `<artifacts>/crash-<hash>`), 3 when one input ran longer than the timeout
//! (saved as `timeout-<hash>`), 2 on usage errors.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const DICT: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b"SIP/2.0",
    b"SIP/2.0 200 OK\r\n",
    b"SIP/2.0 180 Ringing\r\n",
    b"SIP/2.0 487 Request Terminated\r\n",
    b"INVITE sip:01632960123@10.0.0.5 SIP/2.0\r\n",
    b"BYE sip:a@b SIP/2.0\r\n",
    b"CANCEL sip:a@b SIP/2.0\r\n",
    b"ACK sip:a@b SIP/2.0\r\n",
    b"Content-Length: ",
    b"Content-Length: 0\r\n",
    b"l: 99999\r\n",
    b"Call-ID: ",
    b"i: x@y\r\n",
    b"CSeq: 1 INVITE\r\n",
    b"CSeq: 2 BYE\r\n",
    b"From: <sip:07700900123@a>;tag=1\r\n",
    b"To: <sip:01632960123@b>\r\n",
    b";tag=",
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n",
    b"P-Asserted-Identity: <tel:+441632960999>\r\n",
    b"Session-Expires: 90\r\n",
    b" \r\n\t",
    b"tel:",
    b"sips:",
    b"HEP3",
    b"\x00\x00\x00\x0f",
    b"\x08\x00",
    b"\x86\xdd",
    b"\x81\x00",
    b"\x88\x47",
    b"\x88\x64",
    b"\x65\x58",
    b"\xff\x03\x00\x21",
    b"\x12\xb5",
    b"\x13\xc4",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
];

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b' ', b':', b';', b'<', b'>', b'0', b'9', 0x20, 0x40,
    0x45, 0x60, 0xFE,
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
    let rounds = 1 + rng.below(5);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(13) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let copy = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            6 if len > 1 => {
                let src = rng.below(len);
                let dst = rng.below(len);
                let n = 1 + rng.below((len - src).min(len - dst).min(64));
                let copy = data[src..src + n].to_vec();
                data[dst..dst + n].copy_from_slice(&copy);
            }
            7 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            8 => {
                let tok = DICT[rng.below(DICT.len())];
                let i = rng.below(len + 1);
                if rng.below(2) == 0 || i + tok.len() > len {
                    data.splice(i..i, tok.iter().copied());
                } else {
                    data[i..i + tok.len()].copy_from_slice(tok);
                }
            }
            9 if len > 1 => {
                let i = rng.below(len - 1);
                let delta = rng.below(33) as i32 - 16;
                let be = rng.below(2) == 0;
                let v = if be {
                    u16::from_be_bytes([data[i], data[i + 1]])
                } else {
                    u16::from_le_bytes([data[i], data[i + 1]])
                };
                let v = (v as i32 + delta) as u16;
                let b = if be { v.to_be_bytes() } else { v.to_le_bytes() };
                data[i..i + 2].copy_from_slice(&b);
            }
            10 if len > 0 => {
                data.truncate(rng.below(len));
            }
            11 if len > 0 => {
                // replace a run of digits with another number (Content-Length, CSeq...)
                let i = rng.below(len);
                if let Some(s) = (i..len).find(|&j| data[j].is_ascii_digit()) {
                    let e = (s..len).find(|&j| !data[j].is_ascii_digit()).unwrap_or(len);
                    let n = match rng.below(4) {
                        0 => rng.below(10) as u64,
                        1 => rng.below(70_000) as u64,
                        2 => rng.next() % 100_000_000_000,
                        _ => u32::MAX as u64 + rng.below(3) as u64,
                    };
                    data.splice(s..e, n.to_string().into_bytes());
                }
            }
            12 if len > 0 => {
                // repeat a slice many times (long lines, many headers, many records)
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = data[i..i + n].to_vec();
                let times = 2 + rng.below(200);
                let at = rng.below(len + 1);
                let rep: Vec<u8> = copy.iter().copied().cycle().take(n * times).collect();
                data.splice(at..at, rep);
            }
            _ => {
                let i = rng.below(len + 1);
                data.insert(i, rng.next() as u8);
            }
        }
        if data.len() > max_len {
            data.truncate(max_len);
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn save(dir: &Path, kind: &str, data: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{kind}-{:016x}", fnv(data)));
    if let Err(e) = std::fs::write(&path, data) {
        eprintln!("stable_fuzz: cannot write {}: {e}", path.display());
    }
    path
}

fn usage() -> ! {
    eprintln!(
        "usage: stable_fuzz TARGET [--seconds N] [--corpus DIR] [--artifacts DIR] [--seed S] [--max-len BYTES] [--timeout SECONDS]\n\
         targets: {}",
        cbt_fuzz::TARGETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
    );
    std::process::exit(2);
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| usage());
    let Some(&(_, run)) = cbt_fuzz::TARGETS.iter().find(|(n, _)| *n == target) else {
        eprintln!("stable_fuzz: unknown target {target:?}");
        usage();
    };
    let mut seconds = 30u64;
    let mut corpus = manifest.join("corpus").join(&target);
    let mut artifacts = manifest.join("artifacts").join(&target);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (std::process::id() as u64) << 32
        ^ fnv(target.as_bytes())
        | 1;
    let mut max_len = 0usize;
    let mut timeout = 60u64;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seconds" => seconds = val().parse().unwrap_or_else(|_| usage()),
            "--corpus" => corpus = PathBuf::from(val()),
            "--artifacts" => artifacts = PathBuf::from(val()),
            "--seed" => seed = val().parse::<u64>().unwrap_or_else(|_| usage()) | 1,
            "--max-len" => max_len = val().parse().unwrap_or_else(|_| usage()),
            "--timeout" => timeout = val().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }

    let mut pool: Vec<Vec<u8>> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&corpus) {
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(b) = std::fs::read(&p) {
                pool.push(b);
            }
        }
    }
    let seeds = pool.len();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    if max_len == 0 {
        max_len = pool.iter().map(Vec::len).max().unwrap_or(0).max(4096);
    }

    // watchdog: an input that runs longer than the timeout is saved, then we exit
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let started_exec = Arc::new(AtomicU64::new(0)); // ms since `t0` when the current exec began
    let t0 = Instant::now();
    {
        let current = Arc::clone(&current);
        let started_exec = Arc::clone(&started_exec);
        let artifacts = artifacts.clone();
        let target = target.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let began = started_exec.load(Ordering::Relaxed);
            let now = t0.elapsed().as_millis() as u64;
            if began != u64::MAX && now.saturating_sub(began) > timeout * 1000 {
                let input = current.lock().map(|g| g.clone()).unwrap_or_default();
                let path = save(&artifacts, "timeout", &input);
                eprintln!(
                    "stable_fuzz {target}: an input ran for more than {timeout} s (infinite loop?); saved {}",
                    path.display()
                );
                std::process::exit(3);
            }
        });
    }

    let mut rng = Rng(seed);
    let deadline = t0 + Duration::from_secs(seconds);
    let mut runs = 0u64;
    let mut crashed: Option<PathBuf> = None;
    let exec = |input: &[u8], runs: &mut u64| -> bool {
        if let Ok(mut g) = current.lock() {
            g.clear();
            g.extend_from_slice(input);
        }
        started_exec.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
        let ok = catch_unwind(AssertUnwindSafe(|| run(input))).is_ok();
        started_exec.store(u64::MAX, Ordering::Relaxed);
        *runs += 1;
        ok
    };

    // every seed once, then mutants until the time is up
    for input in &pool {
        if !exec(input, &mut runs) {
            crashed = Some(save(&artifacts, "crash", input));
            break;
        }
    }
    let fixed = pool.len();
    let mut buf = Vec::new();
    while crashed.is_none() && Instant::now() < deadline {
        for _ in 0..64 {
            let a = rng.below(pool.len());
            let b = rng.below(pool.len());
            buf.clear();
            buf.extend_from_slice(&pool[a]);
            let other = if a == b { &[][..] } else { &pool[b][..] };
            mutate(&mut rng, &mut buf, other, max_len);
            if !exec(&buf, &mut runs) {
                crashed = Some(save(&artifacts, "crash", &buf));
                break;
            }
            // keep some mutants so that mutations stack
            if rng.below(16) == 0 {
                if pool.len() < 8192 {
                    pool.push(buf.clone());
                } else {
                    let i = fixed + rng.below(pool.len() - fixed);
                    pool[i] = buf.clone();
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-3);
    println!(
        "stable_fuzz {target}: runs={runs} time={secs:.0}s execs/s={:.0} seeds={seeds} pool={} crashes={} seed={seed}",
        runs as f64 / secs,
        pool.len(),
        crashed.is_some() as u8
    );
    if let Some(p) = crashed {
        eprintln!(
            "stable_fuzz {target}: CRASH, input saved as {}",
            p.display()
        );
        std::process::exit(1);
    }
}
