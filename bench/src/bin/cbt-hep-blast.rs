//! Sends synthetic calls to a HEPv3 listener, for the daemon's memory and
//! throughput benchmarks. `cbt-hep-blast ADDR CALLS [CALLS_PER_SECOND [FIRST]]`
//! (FIRST: the number of the first call, so that a second run sends calls
//! with other Call-IDs):
//! each call is the seven messages of an answered call (INVITE, 100, 180,
//! 200, ACK, BYE, 200) from one of 200 carrier addresses to the PBX, stamped
//! with the current time; the rate is held by sleeping between batches.

use anyhow::{Context, Result};
use cbt_proto::synth::{Call, Script};
use cbt_proto::wire::{encode_hep as encode, HepPacket};
use cbt_proto::Timestamp;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cbt-hep-blast ADDR CALLS [CALLS_PER_SECOND [FIRST]]";
    let to: SocketAddr = args.get(1).context(usage)?.parse().context(usage)?;
    let calls: u64 = args.get(2).context(usage)?.parse()?;
    let rate: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let first: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let pbx: SocketAddr = "10.20.0.5:5060".parse()?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    for n in first..first + calls {
        let carrier: SocketAddr = format!("192.0.2.{}:5060", 1 + n % 200).parse()?;
        let c = Call::numbered(
            n,
            carrier,
            pbx,
            now(),
            Script::Answered {
                ring: 0,
                answer: 0,
                talk: 0,
                caller_hangs_up: true,
            },
        );
        for m in c.messages() {
            let pkt = encode(&HepPacket {
                ts: Some(now()),
                src: m.src,
                dst: m.dst,
                ip_proto: 17,
                proto_type: 1,
                capture_id: Some(1),
                correlation_id: None,
                payload: &m.bytes,
            });
            sock.send_to(&pkt, to)?;
            sent += 1;
        }
        // hold the rate
        let due = Duration::from_secs_f64((n - first + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    eprintln!("{calls} calls ({sent} HEP packets) in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
