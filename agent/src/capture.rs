//! Capture files: pcap and pcapng read through libpcap (the `pcap` crate),
//! merged by timestamp when several are given.
//!
//! libpcap refuses pcapng files whose interfaces have different link types
//! (a capture taken on Ethernet and loopback at once); those are read with
//! the `pcap-file` crate instead, with each packet's own interface link type.

use anyhow::Result;
use cbt_proto::Timestamp;
use std::fmt;
use std::path::{Path, PathBuf};

/// One captured packet, owned (buffers are reused between packets).
#[derive(Debug, Default, Clone)]
pub struct Packet {
    pub ts: Timestamp,
    pub linktype: i32,
    pub data: Vec<u8>,
}

/// A problem with one input file, phrased for the person running the tool.
#[derive(Debug, Clone)]
pub struct FileError {
    pub path: PathBuf,
    pub kind: FileErrorKind,
}

#[derive(Debug, Clone)]
pub enum FileErrorKind {
    Open(String),
    Truncated { after: u64, detail: String },
    UnsupportedLink(i32),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            FileErrorKind::Open(msg) => write!(
                f,
                "{p}: cannot read this capture ({msg}); check the path and that it is a pcap or pcapng file"
            ),
            FileErrorKind::Truncated { after, detail } => write!(
                f,
                "{p}: capture is cut short after {after} packets ({detail}); the packets before the cut were used; copy the file again or repair it with `pcapfix`"
            ),
            FileErrorKind::UnsupportedLink(n) => write!(
                f,
                "{p}: link type {n} is not supported (supported: Ethernet, Linux cooked v1/v2, raw IP, loopback/NULL, PPP, PPPoE); capture on an Ethernet interface or on `any`, or convert with `editcap -T ether`"
            ),
        }
    }
}

enum Reader {
    Libpcap(pcap::Capture<pcap::Offline>, i32),
    PcapNg(pcap_file::pcapng::PcapNgReader<std::io::BufReader<std::fs::File>>),
}

/// Reads one file packet by packet.
pub struct FileSource {
    path: PathBuf,
    reader: Reader,
    read: u64,
    done: bool,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource, FileError> {
        let err = |kind| FileError {
            path: path.to_path_buf(),
            kind,
        };
        // nanosecond precision, truncated to microseconds here: the same
        // rounding as live capture, whatever resolution the file has
        match pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano) {
            Ok(cap) => {
                let dl = cap.get_datalink().0;
                if cbt_proto::LinkType::from_linktype(dl).is_none() {
                    return Err(err(FileErrorKind::UnsupportedLink(dl)));
                }
                Ok(FileSource {
                    path: path.to_path_buf(),
                    reader: Reader::Libpcap(cap, dl),
                    read: 0,
                    done: false,
                })
            }
            Err(e) => {
                let msg = e.to_string();
                if is_mixed_linktypes(&msg) {
                    return Ok(FileSource {
                        path: path.to_path_buf(),
                        reader: open_pcapng(path)?,
                        read: 0,
                        done: false,
                    });
                }
                Err(err(FileErrorKind::Open(strip_path(&msg, path))))
            }
        }
    }

    /// Fills `out` with the next packet. `Ok(false)` at the end of the file.
    pub fn next_into(&mut self, out: &mut Packet) -> Result<bool, FileError> {
        if self.done {
            return Ok(false);
        }
        let r = self.next_inner(out);
        match &r {
            Ok(true) => self.read += 1,
            _ => self.done = true,
        }
        r
    }

    fn next_inner(&mut self, out: &mut Packet) -> Result<bool, FileError> {
        let read = self.read;
        // (the path is copied into an error only when there is one)
        let truncated = |path: &Path, detail: String| FileError {
            path: path.to_path_buf(),
            kind: FileErrorKind::Truncated { after: read, detail },
        };
        match &mut self.reader {
            Reader::Libpcap(cap, dl) => match cap.next_packet() {
                Ok(p) => {
                    out.ts = Timestamp::from_secs_micros(p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64 / 1000);
                    out.linktype = *dl;
                    out.data.clear();
                    out.data.extend_from_slice(p.data);
                    Ok(true)
                }
                Err(pcap::Error::NoMorePackets) => Ok(false),
                Err(e) if read == 0 && is_mixed_linktypes(&e.to_string()) => {
                    // libpcap reads the first interface only; read it all with pcap-file
                    self.reader = open_pcapng(&self.path)?;
                    self.next_inner(out)
                }
                Err(e) => Err(truncated(&self.path, e.to_string())),
            },
            Reader::PcapNg(r) => loop {
                use pcap_file::pcapng::Block;
                let block = match r.next_block() {
                    None => return Ok(false),
                    Some(Err(e)) => return Err(truncated(&self.path, e.to_string())),
                    Some(Ok(b)) => b,
                };
                let (iface, ts) = match &block {
                    Block::EnhancedPacket(p) => (p.interface_id, Some(p.timestamp)),
                    Block::SimplePacket(_) => (0, None),
                    // obsolete block: its raw timestamp units are not known here
                    Block::Packet(p) => (p.interface_id as u32, None),
                    _ => continue,
                };
                out.data.clear();
                match &block {
                    Block::EnhancedPacket(p) => out.data.extend_from_slice(&p.data),
                    Block::SimplePacket(p) => out.data.extend_from_slice(&p.data),
                    Block::Packet(p) => out.data.extend_from_slice(&p.data),
                    _ => {}
                }
                drop(block);
                out.linktype = r
                    .interfaces()
                    .get(iface as usize)
                    .map(|i| u32::from(i.linktype) as i32)
                    .unwrap_or(-1);
                if let Some(ts) = ts {
                    out.ts = Timestamp::from_micros(ts.as_micros() as i64);
                }
                return Ok(true);
            },
        }
    }
}

/// libpcap's refusal of a pcapng file with interfaces of several link types.
fn is_mixed_linktypes(msg: &str) -> bool {
    msg.contains("different from the type of the first interface")
}

fn open_pcapng(path: &Path) -> Result<Reader, FileError> {
    let err = |e: String| FileError {
        path: path.to_path_buf(),
        kind: FileErrorKind::Open(e),
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let r = pcap_file::pcapng::PcapNgReader::new(std::io::BufReader::new(f)).map_err(|e| err(e.to_string()))?;
    Ok(Reader::PcapNg(r))
}

fn strip_path(msg: &str, path: &Path) -> String {
    let p = format!("{}: ", path.display());
    msg.strip_prefix(&p).unwrap_or(msg).to_string()
}

/// Several files merged in timestamp order (a file's own order is kept).
pub struct Merged {
    sources: Vec<(FileSource, Packet, bool)>,
    pub errors: Vec<FileError>,
}

impl Merged {
    pub fn open(paths: &[PathBuf]) -> Merged {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match FileSource::open(p) {
                Ok(mut s) => {
                    let mut pkt = Packet::default();
                    match s.next_into(&mut pkt) {
                        Ok(has) => sources.push((s, pkt, has)),
                        Err(e) => errors.push(e),
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Merged { sources, errors }
    }

    /// Calls `f` for every packet in timestamp order.
    pub fn for_each(&mut self, mut f: impl FnMut(&Packet)) {
        loop {
            let next = self
                .sources
                .iter()
                .enumerate()
                .filter(|(_, (_, _, has))| *has)
                .min_by_key(|(i, (_, p, _))| (p.ts, *i))
                .map(|(i, _)| i);
            let i = match next {
                Some(i) => i,
                None => return,
            };
            let (src, pkt, has) = &mut self.sources[i];
            f(pkt);
            match src.next_into(pkt) {
                Ok(more) => *has = more,
                Err(e) => {
                    *has = false;
                    self.errors.push(e);
                }
            }
        }
    }
}
