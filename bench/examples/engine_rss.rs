use cbt_proto::synth::{frames, Call, Script};
use cbt_proto::{Engine, EngineConfig, LinkType, Timestamp};
fn rss() -> String { std::fs::read_to_string("/proc/self/status").unwrap().lines().find(|l| l.starts_with("VmRSS")).unwrap().to_string() }
fn main() {
    let h = cbt_proto::number::Hasher::new([0;32], "44");
    let mut site = cbt_proto::site::Site::single("B82005", &["01632960123"], &h);
    site.carrier = vec![cbt_proto::site::AddrMatch::parse("192.0.2.0/24").unwrap()];
    site.pbx = vec![cbt_proto::site::AddrMatch::parse("10.20.0.5").unwrap()];
    let mut e = Engine::new(EngineConfig { site: Some(site), emit_legs: false, journal: true, ..Default::default() });
    println!("start {}", rss());
    for n in 0..12000u64 {
        let c = Call::numbered(n, format!("192.0.2.{}:5060", 1 + n % 200).parse().unwrap(), "10.20.0.5:5060".parse().unwrap(), Timestamp(n as i64 * 1000), Script::AnsweredNoBye { answer: 100 });
        for (i, m) in c.messages().iter().enumerate() { e.ingest(m.ts, LinkType::Ethernet, &frames::udp(m.src, m.dst, i as u16, &m.bytes)); }
        while e.poll_journal().is_some() {}
        while e.poll_call().is_some() {}
    }
    println!("12k open legs {} open {}", rss(), e.stats().open_legs);
    let mut snap = Vec::new();
    cbt_proto::persist::write_snapshot(&mut snap, 1, &e.snapshot_ref()).unwrap();
    println!("snapshot {} bytes; {}", snap.len(), rss());
}
