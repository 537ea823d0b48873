//! RSS of opening a store and reading it, step by step: how much of the
//! daemon's memory is sled's once a store holds many calls.
//! Usage: cargo run --release -p cbt-bench --example store_rss -- STORE_DIR
use cbt_agent::store::Store;
use cbt_proto::Timestamp;
use cbt_bench::own_mib;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: store_rss STORE_DIR");
    println!("start: {} MiB", own_mib("VmRSS:"));
    let store = Store::open(std::path::Path::new(&dir), 8 << 20).expect("open");
    println!("opened ({} calls): {} MiB", store.call_count(), own_mib("VmRSS:"));
    let c = store.verify().expect("verify");
    println!("verified {} calls: {} MiB", c.calls, own_mib("VmRSS:"));
    let all = store.calls_between(Timestamp::MIN, Timestamp::MAX).expect("read");
    println!("read {} calls into memory: {} MiB", all.len(), own_mib("VmRSS:"));
    drop(all);
    println!("dropped them: {} MiB", own_mib("VmRSS:"));
}
