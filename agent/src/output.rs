//! What `replay` prints: one JSON object per leg, or a summary table.

use cbt_proto::engine::EngineStats;
use cbt_proto::number::Party;
use cbt_proto::Leg;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// One finished leg as printed. Field order is the output order.
#[derive(Serialize)]
pub struct LegOut<'a> {
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub to_tag: Option<&'a str>,
    pub src: String,
    pub dst: String,
    pub transport: &'static str,
    pub started: String,
    pub ringing: Option<String>,
    pub answered: Option<String>,
    pub ended: Option<String>,
    pub final_status: Option<u16>,
    pub end: Option<&'static str>,
    pub ended_by: Option<&'static str>,
    /// Hashed unless numbers are revealed.
    pub from_user: Option<String>,
    pub to_user: Option<String>,
    pub ruri_user: Option<String>,
    pub asserted_user: Option<String>,
    pub forks: usize,
    pub retransmissions: u32,
    pub challenges: u32,
    pub session_expires: Option<u32>,
    pub referred: bool,
    pub partial: bool,
    pub source: &'static str,
}

fn party(p: &Party, reveal: bool) -> Option<String> {
    if reveal {
        p.raw.clone().or_else(|| p.hash.clone())
    } else {
        p.hash.as_ref().map(|h| format!("h:{h}"))
    }
}

pub fn leg_json(leg: &Leg, reveal: bool) -> String {
    let out = LegOut {
        call_id: &leg.call_id,
        from_tag: &leg.from_tag,
        to_tag: leg.to_tag.as_deref(),
        src: leg.src.to_string(),
        dst: leg.dst.to_string(),
        transport: leg.transport.name(),
        started: leg.started.to_rfc3339(),
        ringing: leg.ringing.map(|t| t.to_rfc3339()),
        answered: leg.answered.map(|t| t.to_rfc3339()),
        ended: leg.ended.map(|t| t.to_rfc3339()),
        final_status: leg.final_status,
        end: leg.end.map(|e| e.name()),
        ended_by: leg.ended_by.map(|s| match s {
            cbt_proto::Side::Caller => "caller",
            cbt_proto::Side::Callee => "callee",
        }),
        from_user: party(&leg.from, reveal),
        to_user: party(&leg.to, reveal),
        ruri_user: party(&leg.ruri, reveal),
        asserted_user: party(&leg.asserted, reveal),
        forks: leg.forks.len(),
        retransmissions: leg.retransmissions,
        challenges: leg.challenges,
        session_expires: leg.session_expires,
        referred: leg.referred,
        partial: leg.partial,
        source: match leg.source {
            cbt_proto::wire::Source::Capture => "capture",
            cbt_proto::wire::Source::Hep => "hep",
        },
    };
    serde_json::to_string(&out).expect("leg serialises")
}

/// Tallies of finished legs for the summary.
#[derive(Default)]
pub struct LegTally {
    pub legs: u64,
    pub answered: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_end: BTreeMap<String, u64>,
}

impl LegTally {
    pub fn add(&mut self, leg: &Leg) {
        self.legs += 1;
        if leg.answered.is_some() {
            self.answered += 1;
        }
        let status = leg.final_status.map_or("none".to_string(), |s| s.to_string());
        *self.by_status.entry(status).or_default() += 1;
        *self.by_end.entry(leg.end.map_or("open", |e| e.name()).to_string()).or_default() += 1;
    }
}

/// The human summary printed by `replay --output summary`.
pub fn write_summary(w: &mut impl Write, tally: &LegTally, stats: &EngineStats, unsupported: u64) -> std::io::Result<()> {
    let section = |w: &mut dyn Write, title: &str, rows: &BTreeMap<String, u64>| -> std::io::Result<()> {
        writeln!(w, "\n{title}")?;
        if rows.is_empty() {
            writeln!(w, "  (none)")?;
        }
        for (k, v) in rows {
            writeln!(w, "  {k:<28} {v:>10}")?;
        }
        Ok(())
    };
    writeln!(w, "Legs")?;
    writeln!(w, "  {:<28} {:>10}", "total", tally.legs)?;
    writeln!(w, "  {:<28} {:>10}", "answered", tally.answered)?;
    section(w, "Legs by final status", &tally.by_status)?;
    section(w, "Legs by end", &tally.by_end)?;
    writeln!(w, "\nPackets")?;
    writeln!(w, "  {:<28} {:>10}", "frames", stats.wire.frames)?;
    if unsupported > 0 {
        writeln!(w, "  {:<28} {:>10}", "unsupported link type", unsupported)?;
    }
    section(w, "Packets by link type", &stats.wire.frames_by_link)?;
    let mut wire_issues = BTreeMap::new();
    for (k, v) in [
        ("not IP", stats.wire.not_ip),
        ("truncated", stats.wire.truncated),
        ("bad IP header", stats.wire.bad_ip),
        ("bad UDP header", stats.wire.bad_udp),
        ("bad TCP header", stats.wire.bad_tcp),
        ("too many encapsulations", stats.wire.too_deep),
        ("fragments invalid", stats.wire.fragments_invalid),
        ("fragments evicted", stats.wire.fragments_evicted),
        ("fragments expired", stats.wire.fragments_expired),
        ("TCP gaps", stats.wire.tcp_gaps),
        ("HEP errors", stats.wire.hep_errors),
    ] {
        if v > 0 {
            wire_issues.insert(k.to_string(), v);
        }
    }
    section(w, "Packets not read, by reason", &wire_issues)?;
    writeln!(w, "\nSIP")?;
    writeln!(w, "  {:<28} {:>10}", "messages", stats.sip.messages)?;
    writeln!(w, "  {:<28} {:>10}", "reassembled IP datagrams", stats.wire.datagrams_reassembled)?;
    writeln!(w, "  {:<28} {:>10}", "non-dialog (REGISTER...)", stats.sip.ignored)?;
    writeln!(w, "  {:<28} {:>10}", "retransmissions", stats.legs.retransmissions)?;
    section(w, "Requests", &stats.sip.requests)?;
    section(w, "Responses", &stats.sip.responses)?;
    section(w, "Parse errors by reason", &stats.sip.parse_errors)?;
    if !stats.sip.rsip_rejected.is_empty() {
        section(w, "rsip rejections salvaged", &stats.sip.rsip_rejected)?;
    }
    if !stats.sip.repairs.is_empty() {
        section(w, "Normalising repairs", &stats.sip.repairs)?;
    }
    Ok(())
}
