//! RSS of opening a store and reading it, step by step: how much of the
//! daemon's memory is sled's once a store holds many calls.
//! Usage: cargo run --release -p cbt-bench --example store_rss -- STORE_DIR
use cbt_agent::store::Store;
use cbt_proto::Timestamp;

fn rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: store_rss STORE_DIR");
    println!("start: {} MiB", rss_mib());
    let store = Store::open(std::path::Path::new(&dir), 8 << 20).expect("open");
    println!("opened ({} calls): {} MiB", store.call_count(), rss_mib());
    let c = store.verify().expect("verify");
    println!("verified {} calls: {} MiB", c.calls, rss_mib());
    let all = store.calls_between(Timestamp::MIN, Timestamp::MAX).expect("read");
    println!("read {} calls into memory: {} MiB", all.len(), rss_mib());
    drop(all);
    println!("dropped them: {} MiB", rss_mib());
}
