//! The baseline: iterate a capture with libpcap (the `pcap` crate) and touch
//! every byte, doing nothing else. `cbt-pcap-iterate FILE` prints
//! `packets bytes checksum`.

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: cbt-pcap-iterate FILE"))?;
    let mut cap = pcap::Capture::from_file(&path)?;
    let (mut packets, mut bytes, mut sum) = (0u64, 0u64, 0u64);
    loop {
        match cap.next_packet() {
            Ok(p) => {
                packets += 1;
                bytes += p.data.len() as u64;
                // read the frame so the page cache and memory traffic are paid
                sum = sum.wrapping_add(p.data.iter().map(|b| *b as u64).sum::<u64>());
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("{packets} {bytes} {sum}");
    Ok(())
}
