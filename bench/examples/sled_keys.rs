//! What sled's resident memory follows: keys or bytes. Writes N calls'
//! worth of values into a bare sled tree (the store's settings: 8 MiB
//! cache, LowSpace, flush every second), K calls to a key, and prints RSS
//! every 500,000 calls. The evidence for how call records should be kept
//! (docs/testing.md, issue 13's note).
//!
//!   sled_keys DIR CALLS BYTES_PER_CALL CALLS_PER_KEY
//!
//! e.g. `sled_keys /tmp/k 4000000 450 1` (one JSON record a key, as the
//! store keeps them) against `sled_keys /tmp/k 4000000 200 8`.

use cbt_bench::own_mib;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: sled_keys DIR CALLS BYTES_PER_CALL CALLS_PER_KEY");
        std::process::exit(2);
    }
    let calls: u64 = a[2].parse().expect("CALLS");
    let bytes: usize = a[3].parse().expect("BYTES_PER_CALL");
    let per_key: u64 = a[4].parse::<u64>().expect("CALLS_PER_KEY").max(1);
    let db = sled::Config::new()
        .path(&a[1])
        .cache_capacity(8 << 20)
        .flush_every_ms(Some(1000))
        .mode(sled::Mode::LowSpace)
        .open()
        .expect("open");
    let tree = db.open_tree("calls").expect("tree");
    let value = vec![b'x'; bytes * per_key as usize];
    let mut written = 0u64;
    while written < calls {
        // keyed as the store keys calls: start time, then sequence number
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&(1_700_000_000_000_000u64 + written * 1000).to_be_bytes());
        k[8..].copy_from_slice(&written.to_be_bytes());
        tree.insert(&k[..], &value[..]).expect("insert");
        written += per_key;
        if written % 500_000 < per_key {
            println!("{written:>9} calls in {:>8} keys: RSS {} MiB", written / per_key, own_mib("VmRSS:"));
        }
    }
    db.flush().expect("flush");
    println!("end: RSS {} MiB, peak {} MiB, {} calls of {bytes} bytes, {per_key} a key", own_mib("VmRSS:"), own_mib("VmHWM:"), written);
}
