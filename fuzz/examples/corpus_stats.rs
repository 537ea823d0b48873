//! Engine counters summed over a corpus: which paths the fuzzers reach.
//!
//! `cargo run --release --no-default-features --example corpus_stats -- link_ip|tcp_reassembly [DIR]`

use std::collections::BTreeMap;

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "link_ip".into());
    let dir = args
        .next()
        .unwrap_or_else(|| format!("{}/corpus/{target}", env!("CARGO_MANIFEST_DIR")));
    let run: fn(&[u8]) -> Option<cbt_proto::EngineStats> = match target.as_str() {
        "link_ip" => cbt_fuzz::link_ip_stats,
        "tcp_reassembly" => cbt_fuzz::tcp_reassembly_stats,
        _ => panic!("target must be link_ip or tcp_reassembly"),
    };
    let mut inputs = 0;
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new(); // (total, inputs where > 0)
    for e in std::fs::read_dir(&dir).expect("corpus directory") {
        let data = std::fs::read(e.expect("entry").path()).expect("input");
        let Some(s) = run(&data) else { continue };
        inputs += 1;
        let mut add = |section: &str, v: serde_json::Value| {
            for (k, v) in v.as_object().into_iter().flatten() {
                let n = match v {
                    serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
                    serde_json::Value::Object(m) => {
                        for (k2, v2) in m {
                            let e = sums.entry(format!("{section}.{k}.{k2}")).or_default();
                            let n = v2.as_u64().unwrap_or(0);
                            e.0 += n;
                            e.1 += (n > 0) as u64;
                        }
                        continue;
                    }
                    _ => continue,
                };
                let e = sums.entry(format!("{section}.{k}")).or_default();
                e.0 += n;
                e.1 += (n > 0) as u64;
            }
        };
        add("wire", serde_json::to_value(&s.wire).unwrap());
        add("sip", serde_json::to_value(&s.sip).unwrap());
        add("legs", serde_json::to_value(&s.legs).unwrap());
    }
    println!("{inputs} inputs from {dir}");
    for (k, (total, hits)) in sums {
        println!("{k:45} {total:>12} in {hits:>6} inputs");
    }
}
