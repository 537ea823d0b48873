//! What `replay` prints: one JSON object per leg, or a summary table.

use cbt_proto::engine::EngineStats;
use cbt_proto::number::Party;
use cbt_proto::{count_by_name, Leg};
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
        p.user().or(p.hash_str()).map(str::to_string)
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
        ringing: leg.ringing.get().map(|t| t.to_rfc3339()),
        answered: leg.answered.get().map(|t| t.to_rfc3339()),
        ended: leg.ended.get().map(|t| t.to_rfc3339()),
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
        let status = leg.final_status.map(|c| c.to_string());
        count_by_name(&mut self.by_status, status.as_deref().unwrap_or("none"));
        count_by_name(&mut self.by_end, leg.end.map_or("open", |e| e.name()));
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
    let (k, m) = (&stats.guard.screen, &stats.guard.memory);
    let mut kept = BTreeMap::new();
    for (name, v) in [
        ("INVITEs, unexpected senders", k.unexpected_invites),
        ("INVITEs, scanner User-Agent", k.scanner_agent_invites),
        ("calls, scanner behaviour", k.scanner_calls),
        ("other requests", k.other_requests),
        ("messages absorbed", k.absorbed),
        ("HEP from unknown senders", stats.wire.hep_rejected),
        ("legs shed for memory", m.legs_shed),
    ] {
        if v > 0 {
            kept.insert(name.to_string(), v);
        }
    }
    section(w, "Kept out of the figures (scanners, floods)", &kept)?;
    for src in &stats.guard.sources {
        writeln!(w, "  {:<28} {:>10}  {}{}", src.address, src.total(), src.why, src.user_agent.as_deref().map(|a| format!(" ({a})")).unwrap_or_default())?;
    }
    Ok(())
}

/// One inbound call as `replay --output calls` and `report --output calls`
/// print it and `/api/calls` serves it: times in RFC 3339, no caller
/// number, name or hash of one. The one JSON shape of a call outside the
/// store (which has its own, versioned: `cbt_proto::persist`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CallJson {
    /// The call's number in its store (the API only: `report` needs it to
    /// attach callbacks made; printed output leaves it out, as it depends
    /// on where the calls were counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub practice: String,
    pub started: String,
    pub queue_joined: Option<String>,
    pub first_ring: Option<String>,
    pub answered: Option<String>,
    pub ended: String,
    pub ended_by: String,
    pub outcome: String,
    pub wait_s: Option<f64>,
    pub duration_s: Option<f64>,
    pub abandoned: bool,
    pub voicemail: Option<String>,
    pub callback_requested: Option<String>,
    pub callback_made: Option<String>,
    pub offered_to_staff: bool,
    pub legs: u32,
    pub partial: bool,
}

fn secs3(x: Option<f64>) -> Option<f64> {
    x.map(|v| (v * 1000.0).round() / 1000.0)
}

impl CallJson {
    /// As printed (`exact`: false; waits to the millisecond) or as the API
    /// serves it (`exact`: true; with `seq`, waits unrounded).
    pub fn of(r: &cbt_proto::call::CallRecord, exact: bool) -> CallJson {
        let t = |x: Option<cbt_proto::Timestamp>| x.map(|t| t.to_rfc3339());
        let round = |x: Option<f64>| if exact { x } else { secs3(x) };
        CallJson {
            seq: exact.then_some(r.seq),
            practice: r.practice.clone(),
            started: r.started.to_rfc3339(),
            queue_joined: t(r.queue_joined),
            first_ring: t(r.first_ring),
            answered: t(r.answered),
            ended: r.ended.to_rfc3339(),
            ended_by: r.ended_by.name().into(),
            outcome: r.outcome.name().into(),
            wait_s: round(r.wait_s),
            duration_s: round(r.duration_s),
            abandoned: r.abandoned,
            voicemail: t(r.voicemail),
            callback_requested: t(r.callback_requested),
            callback_made: t(r.callback_made),
            offered_to_staff: r.offered_to_staff,
            legs: r.legs,
            partial: r.partial,
        }
    }

    /// Back to a record (what `report` counts), or why not.
    pub fn record(&self) -> Result<cbt_proto::call::CallRecord, String> {
        use cbt_proto::call::{EndedBy, Outcome};
        let ts = |s: &str| cbt_proto::Timestamp::parse_rfc3339(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 time"));
        let opt = |s: &Option<String>| s.as_deref().map(ts).transpose();
        let outcome = *Outcome::ALL.iter().find(|o| o.name() == self.outcome).ok_or_else(|| format!("unknown outcome `{}`", self.outcome))?;
        let ended_by = [EndedBy::Caller, EndedBy::Practice, EndedBy::Inferred]
            .into_iter()
            .find(|e| e.name() == self.ended_by)
            .ok_or_else(|| format!("unknown ended_by `{}`", self.ended_by))?;
        Ok(cbt_proto::call::CallRecord {
            seq: self.seq.unwrap_or(0),
            call_id: String::new(),
            practice: self.practice.clone(),
            started: ts(&self.started)?,
            queue_joined: opt(&self.queue_joined)?,
            first_ring: opt(&self.first_ring)?,
            answered: opt(&self.answered)?,
            ended: ts(&self.ended)?,
            ended_by,
            outcome,
            wait_s: self.wait_s,
            duration_s: self.duration_s,
            abandoned: self.abandoned,
            voicemail: opt(&self.voicemail)?,
            callback_requested: opt(&self.callback_requested)?,
            callback_made: opt(&self.callback_made)?,
            offered_to_staff: self.offered_to_staff,
            legs: self.legs,
            correlation: Default::default(),
            partial: self.partial,
            caller: None,
        })
    }
}

pub fn call_json(r: &cbt_proto::call::CallRecord) -> String {
    serde_json::to_string(&CallJson::of(r, false)).expect("call serialises")
}

/// The readable report of `--output report`.
pub fn write_report(w: &mut dyn Write, r: &cbt_proto::metrics::Report) -> std::io::Result<()> {
    use cbt_proto::metrics::{Indicator, CORE_CATEGORIES, TIME_CATEGORIES};
    let span = match (r.from, r.to) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        _ => "no calls".into(),
    };
    let s = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} s"));
    for p in &r.practices {
        writeln!(w, "Practice {}  ({span}, times in {})", p.practice, r.timezone)?;
        writeln!(w, "  Indicators")?;
        for i in Indicator::ALL {
            writeln!(w, "    {} {:<24} {:>8}", i.code(), i.name(), p.totals[i.code()])?;
        }
        write!(w, "  By time band    ")?;
        for i in Indicator::BY_TIME {
            write!(w, " {:>7}", i.code())?;
        }
        writeln!(w)?;
        for band in TIME_CATEGORIES {
            write!(w, "    {band:<13}")?;
            for i in Indicator::BY_TIME {
                write!(w, " {:>7}", p.by_time_category[i.code()][band])?;
            }
            writeln!(w)?;
        }
        write!(w, "  Answered by wait (CBT003)")?;
        for c in CORE_CATEGORIES {
            write!(w, " {c:>13}")?;
        }
        writeln!(w)?;
        for (label, by_core) in &p.cbt003_by_wait {
            write!(w, "    {label:<22}")?;
            for c in CORE_CATEGORIES {
                write!(w, " {:>13}", by_core[c])?;
            }
            writeln!(w)?;
        }
        writeln!(w, "  Answered by duration (CBT007)")?;
        for (label, n) in &p.cbt007_by_duration {
            writeln!(w, "    {label:<22} {n:>8}")?;
        }
        for m in &p.months {
            let d = &m.dpn;
            writeln!(w, "  Data Provision Notice metrics, {}", m.month)?;
            writeln!(w, "    1 Call volume               {:>8}", d.call_volume)?;
            writeln!(
                w,
                "    2 Calls abandoned           {:>8}   ({} while waiting, {} in the IVR)",
                d.calls_abandoned, d.calls_abandoned_waiting, d.calls_abandoned_in_ivr
            )?;
            writeln!(w, "    3 Time to answer            mean {}, median {}", s(d.mean_wait_to_answer_s), s(d.median_wait_to_answer_s))?;
            writeln!(w, "    4 Missed calls              {:>8}", d.missed_calls)?;
            writeln!(
                w,
                "    5 Wait before abandonment   mean {}, median {}",
                s(d.mean_wait_before_abandonment_s),
                s(d.median_wait_before_abandonment_s)
            )?;
            writeln!(w, "    6 Callbacks requested       {:>8}", d.callbacks_requested)?;
            writeln!(w, "    7 Callbacks made            {:>8}", d.callbacks_made)?;
            writeln!(w, "    8 Call length               mean {}, median {}", s(d.mean_call_length_s), s(d.median_call_length_s))?;
            writeln!(w, "    9 Inbound calls answered    {:>8}", d.answered_calls)?;
        }
        if p.partial_calls > 0 {
            writeln!(w, "  Calls seen only in part (an end inferred, a leg missing): {}", p.partial_calls)?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// Writes the three published CSV files into `dir` (created if needed).
pub fn write_nhs_csv(
    dir: &std::path::Path,
    mut fig: cbt_proto::metrics::export::Figures<'_>,
    unassigned: bool,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !unassigned {
        fig.practices.retain(|(p, _)| p != cbt_proto::site::UNASSIGNED);
    }
    for (name, text) in cbt_proto::metrics::export::files(&fig, from, to) {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}
