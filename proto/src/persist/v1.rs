//! Version 1 of everything the agent writes to disk: the shapes cbt-agent
//! 0.1.0 wrote (it had no version marks except the snapshot's `version`),
//! frozen here. These types never change: a new shape is a new module
//! (`v2`), with a conversion from this one.
//!
//! Every enum and struct the engine keeps has its own copy here, with
//! explicit conversions both ways, so that renaming a field or a variant
//! in the engine cannot change what is on disk (the compiler points at
//! the conversion instead).

use crate::call::{self, CallRecord, CallSnapshot, CallStats, Correlation, EndedBy, Outcome};
use crate::engine::{EngineSnapshot, JournalEntry};
use crate::leg::{EndReason, Leg, LegId, LegSnapshot, LegStats, Side, State, UserHashes};
use crate::metrics::Day;
use crate::number::{NumHash, Party};
use crate::sip::{Kind, Method, NameAddr, SipMessage};
use crate::time::{OptTime, Timestamp};
use crate::wire::{Source, Transport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Declares a frozen copy of an engine enum (unit variants only) with its
/// serde spelling, and the conversions both ways.
macro_rules! frozen_enum {
    ($(#[$m:meta])* $name:ident <=> $engine:path { $($v:ident),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        $(#[$m])*
        pub enum $name { $($v),* }
        impl From<$engine> for $name {
            fn from(e: $engine) -> Self {
                use $engine as E;
                match e { $(E::$v => $name::$v),* }
            }
        }
        impl From<$name> for $engine {
            fn from(e: $name) -> Self {
                use $engine as E;
                match e { $($name::$v => E::$v),* }
            }
        }
    };
}

frozen_enum!(#[serde(rename_all = "lowercase")] TransportV1 <=> Transport { Udp, Tcp, Tls, Sctp });
frozen_enum!(#[serde(rename_all = "lowercase")] SourceV1 <=> Source { Capture, Hep });
frozen_enum!(#[serde(rename_all = "lowercase")] EndReasonV1 <=> EndReason { Bye, Cancel, Rejected, Timeout, Inferred });
frozen_enum!(#[serde(rename_all = "lowercase")] SideV1 <=> Side { Caller, Callee });
frozen_enum!(#[serde(rename_all = "snake_case")] StateV1 <=> State { Calling, Proceeding, Challenged, Cancelling, Confirmed, Ended });
frozen_enum!(#[serde(rename_all = "snake_case")] OutcomeV1 <=> Outcome { Answered, EndedInIvr, Missed, CallbackRequested });
frozen_enum!(#[serde(rename_all = "snake_case")] EndedByV1 <=> EndedBy { Caller, Practice, Inferred });
frozen_enum!(AutoV1 <=> call::Auto { Ivr, Queue, Voicemail, Callback });
frozen_enum!(#[serde(rename_all = "UPPERCASE")] MethodV1 <=> Method {
    Invite, Ack, Bye, Cancel, Update, Prack, Refer, Info, Options, Register, Subscribe, Notify, Publish, Message, Other
});

fn opt<A, B: From<A>>(a: Option<A>) -> Option<B> {
    a.map(B::from)
}

fn one() -> u32 {
    1
}

// ---------------------------------------------------------------- calls ---

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelationV1 {
    pub same_call_id: u16,
    pub header: u16,
    pub b2bua: u16,
}

impl From<Correlation> for CorrelationV1 {
    fn from(c: Correlation) -> Self {
        CorrelationV1 {
            same_call_id: c.same_call_id,
            header: c.header,
            b2bua: c.b2bua,
        }
    }
}

impl From<CorrelationV1> for Correlation {
    fn from(c: CorrelationV1) -> Self {
        Correlation {
            same_call_id: c.same_call_id,
            header: c.header,
            b2bua: c.b2bua,
        }
    }
}

/// A finished call in the store (`calls` tree). Never holds the caller's
/// hash: it is needed in memory only, for callback matching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallV1 {
    /// 1; absent in what 0.1.0 wrote.
    #[serde(default = "one")]
    pub v: u32,
    pub seq: u64,
    #[serde(default)]
    pub call_id: String,
    pub practice: String,
    pub started: Timestamp,
    pub queue_joined: Option<Timestamp>,
    pub first_ring: Option<Timestamp>,
    pub answered: Option<Timestamp>,
    pub ended: Timestamp,
    pub ended_by: EndedByV1,
    pub outcome: OutcomeV1,
    pub wait_s: Option<f64>,
    pub duration_s: Option<f64>,
    pub abandoned: bool,
    pub voicemail: Option<Timestamp>,
    pub callback_requested: Option<Timestamp>,
    pub callback_made: Option<Timestamp>,
    pub offered_to_staff: bool,
    pub legs: u32,
    pub correlation: CorrelationV1,
    pub partial: bool,
}

impl From<&CallRecord> for CallV1 {
    fn from(r: &CallRecord) -> Self {
        CallV1 {
            v: 1,
            seq: r.seq,
            call_id: r.call_id.clone(),
            practice: r.practice.clone(),
            started: r.started,
            queue_joined: r.queue_joined,
            first_ring: r.first_ring,
            answered: r.answered,
            ended: r.ended,
            ended_by: r.ended_by.into(),
            outcome: r.outcome.into(),
            wait_s: r.wait_s,
            duration_s: r.duration_s,
            abandoned: r.abandoned,
            voicemail: r.voicemail,
            callback_requested: r.callback_requested,
            callback_made: r.callback_made,
            offered_to_staff: r.offered_to_staff,
            legs: r.legs,
            correlation: r.correlation.into(),
            partial: r.partial,
        }
    }
}

impl From<CallV1> for CallRecord {
    fn from(c: CallV1) -> Self {
        CallRecord {
            seq: c.seq,
            call_id: c.call_id,
            practice: c.practice,
            started: c.started,
            queue_joined: c.queue_joined,
            first_ring: c.first_ring,
            answered: c.answered,
            ended: c.ended,
            ended_by: c.ended_by.into(),
            outcome: c.outcome.into(),
            wait_s: c.wait_s,
            duration_s: c.duration_s,
            abandoned: c.abandoned,
            voicemail: c.voicemail,
            callback_requested: c.callback_requested,
            callback_made: c.callback_made,
            offered_to_staff: c.offered_to_staff,
            legs: c.legs,
            correlation: c.correlation.into(),
            partial: c.partial,
            caller: None,
        }
    }
}

// ----------------------------------------------------------------- days ---

/// A closed day's figures for one practice (`days` tree).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayV1 {
    #[serde(default = "one")]
    pub v: u32,
    /// CBT001-CBT006 by time band.
    pub bands: [[u64; 9]; 6],
    pub answered_by_wait: Vec<[u64; 3]>,
    pub answered_by_duration: Vec<u64>,
    pub answered_waits: Vec<f64>,
    pub abandoned_waits: Vec<f64>,
    pub durations: Vec<f64>,
    pub abandoned_missed: u64,
    pub abandoned_in_ivr: u64,
    pub partial: u64,
}

impl From<&Day> for DayV1 {
    fn from(d: &Day) -> Self {
        DayV1 {
            v: 1,
            bands: d.bands,
            answered_by_wait: d.answered_by_wait.clone(),
            answered_by_duration: d.answered_by_duration.clone(),
            answered_waits: d.answered_waits.clone(),
            abandoned_waits: d.abandoned_waits.clone(),
            durations: d.durations.clone(),
            abandoned_missed: d.abandoned_missed,
            abandoned_in_ivr: d.abandoned_in_ivr,
            partial: d.partial,
        }
    }
}

impl From<DayV1> for Day {
    fn from(d: DayV1) -> Self {
        Day {
            bands: d.bands,
            answered_by_wait: d.answered_by_wait,
            answered_by_duration: d.answered_by_duration,
            answered_waits: d.answered_waits,
            abandoned_waits: d.abandoned_waits,
            durations: d.durations,
            abandoned_missed: d.abandoned_missed,
            abandoned_in_ivr: d.abandoned_in_ivr,
            partial: d.partial,
        }
    }
}

// -------------------------------------------------------------- journal ---

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KindV1 {
    Request(MethodV1),
    Response(u16),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameAddrV1 {
    pub user: Option<String>,
    pub tag: Option<String>,
}

impl From<&NameAddr> for NameAddrV1 {
    fn from(n: &NameAddr) -> Self {
        NameAddrV1 {
            user: n.user.as_deref().map(str::to_string),
            tag: n.tag.as_deref().map(str::to_string),
        }
    }
}

impl From<NameAddrV1> for NameAddr {
    fn from(n: NameAddrV1) -> Self {
        NameAddr {
            user: n.user.map(Into::into),
            tag: n.tag.map(Into::into),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageV1 {
    pub kind: KindV1,
    pub call_id: String,
    pub from: NameAddrV1,
    pub to: NameAddrV1,
    pub ruri_user: Option<String>,
    pub cseq: u32,
    pub cseq_method: MethodV1,
    pub via_branch: Option<String>,
    pub asserted_user: Option<String>,
    /// Always written empty (the engine dropped it before journalling);
    /// read and ignored.
    pub contact: Option<String>,
    pub reason: Option<String>,
    pub session_expires: Option<u32>,
    pub headers: Vec<(String, String)>,
}

/// A journal record: one SIP message that reached the legs, its phone
/// numbers replaced by keyed hashes (`hashes`: From, To, Request-URI,
/// asserted identity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecordV1 {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: TransportV1,
    pub source: SourceV1,
    pub msg: MessageV1,
    /// Written by [`crate::number::Hasher`]: 16 hex digits (a string on
    /// the wire, as ever; anything else is refused).
    pub hashes: [Option<NumHash>; 4],
}

impl From<&JournalEntry> for JournalRecordV1 {
    fn from(e: &JournalEntry) -> Self {
        let m = &e.msg;
        JournalRecordV1 {
            ts: e.ts,
            src: e.src,
            dst: e.dst,
            transport: e.transport.into(),
            source: e.source.into(),
            msg: MessageV1 {
                kind: match m.kind {
                    Kind::Request(x) => KindV1::Request(x.into()),
                    Kind::Response(c) => KindV1::Response(c),
                },
                call_id: m.call_id.clone(),
                from: (&m.from).into(),
                to: (&m.to).into(),
                ruri_user: m.ruri_user.as_deref().map(str::to_string),
                cseq: m.cseq,
                cseq_method: m.cseq_method.into(),
                via_branch: m.via_branch.as_deref().map(str::to_string),
                asserted_user: m.asserted_user.as_deref().map(str::to_string),
                contact: None,
                reason: m.reason.clone(),
                session_expires: m.session_expires,
                headers: m.headers.clone(),
            },
            hashes: e.hashes.0,
        }
    }
}

impl From<JournalRecordV1> for JournalEntry {
    fn from(r: JournalRecordV1) -> Self {
        let m = r.msg;
        JournalEntry {
            ts: r.ts,
            src: r.src,
            dst: r.dst,
            transport: r.transport.into(),
            source: r.source.into(),
            msg: SipMessage {
                kind: match m.kind {
                    KindV1::Request(x) => Kind::Request(x.into()),
                    KindV1::Response(c) => Kind::Response(c),
                },
                call_id: m.call_id,
                from: m.from.into(),
                to: m.to.into(),
                ruri_user: m.ruri_user.map(Into::into),
                cseq: m.cseq,
                cseq_method: m.cseq_method.into(),
                via_branch: m.via_branch.map(Into::into),
                asserted_user: m.asserted_user.map(Into::into),
                reason: m.reason,
                session_expires: m.session_expires,
                headers: m.headers,
                // not journalled: a leg restored from the journal is tied
                // to its call by the other signals
                media: None,
            },
            hashes: UserHashes(r.hashes),
        }
    }
}

// ------------------------------------------------------------- snapshot ---

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyV1 {
    pub hash: Option<NumHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl From<&Party> for PartyV1 {
    fn from(p: &Party) -> Self {
        PartyV1 {
            hash: p.hash,
            text: p.text().map(str::to_string),
        }
    }
}

impl From<PartyV1> for Party {
    fn from(p: PartyV1) -> Self {
        Party {
            hash: p.hash,
            storable: p.text.is_some(),
            user: p.text.map(Into::into),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegV1 {
    pub id: u64,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub forks: Vec<String>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: TransportV1,
    pub source: SourceV1,
    pub started: Timestamp,
    pub ringing: Option<Timestamp>,
    pub answered: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    pub final_status: Option<u16>,
    pub final_at: Option<Timestamp>,
    pub end: Option<EndReasonV1>,
    pub ended_by: Option<SideV1>,
    pub from: PartyV1,
    pub to: PartyV1,
    pub ruri: PartyV1,
    pub asserted: PartyV1,
    pub session_expires: Option<u32>,
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub referred: bool,
    pub partial: bool,
    pub retransmissions: u32,
    pub challenges: u32,
    pub state: StateV1,
    pub branches: Vec<String>,
    pub initial_cseqs: Vec<u32>,
    pub last_invite: Timestamp,
    pub last_activity: Timestamp,
    pub last_refresh: Option<Timestamp>,
    pub challenged_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
}

impl From<&Leg> for LegV1 {
    fn from(l: &Leg) -> Self {
        LegV1 {
            id: l.id.0,
            call_id: l.call_id.to_string(),
            from_tag: l.from_tag.to_string(),
            to_tag: l.to_tag.as_ref().map(|t| t.to_string()),
            forks: l.forks.iter().map(|t| t.to_string()).collect(),
            src: l.src,
            dst: l.dst,
            transport: l.transport.into(),
            source: l.source.into(),
            started: l.started,
            ringing: l.ringing.get(),
            answered: l.answered.get(),
            ended: l.ended.get(),
            final_status: l.final_status,
            final_at: l.final_at.get(),
            end: opt(l.end),
            ended_by: opt(l.ended_by),
            from: (&l.from).into(),
            to: (&l.to).into(),
            ruri: (&l.ruri).into(),
            asserted: (&l.asserted).into(),
            session_expires: l.session_expires,
            reason: l.reason().map(str::to_string),
            headers: l.headers().to_vec(),
            referred: l.referred,
            partial: l.partial,
            retransmissions: l.retransmissions,
            challenges: l.challenges,
            state: l.state.into(),
            branches: l.branches.iter().map(|t| t.to_string()).collect(),
            initial_cseqs: l.initial_cseqs.to_vec(),
            last_invite: l.last_invite,
            last_activity: l.last_activity,
            last_refresh: l.last_refresh.get(),
            challenged_at: l.challenged_at.get(),
            cancelled_at: l.cancelled_at.get(),
        }
    }
}

impl From<LegV1> for Leg {
    fn from(l: LegV1) -> Self {
        Leg {
            id: LegId(l.id),
            call_id: l.call_id.into(),
            from_tag: l.from_tag.into(),
            to_tag: l.to_tag.map(Into::into),
            forks: l.forks.into_iter().map(Into::into).collect(),
            src: l.src,
            dst: l.dst,
            transport: l.transport.into(),
            source: l.source.into(),
            started: l.started,
            ringing: l.ringing.into(),
            answered: l.answered.into(),
            ended: l.ended.into(),
            final_status: l.final_status,
            final_at: l.final_at.into(),
            end: opt(l.end),
            ended_by: opt(l.ended_by),
            from: l.from.into(),
            to: l.to.into(),
            ruri: l.ruri.into(),
            asserted: l.asserted.into(),
            session_expires: l.session_expires,
            extra: crate::leg::LegExtra::boxed(l.reason, l.headers),
            referred: l.referred,
            partial: l.partial,
            retransmissions: l.retransmissions,
            challenges: l.challenges,
            state: l.state.into(),
            branches: l.branches.into_iter().map(Into::into).collect(),
            initial_cseqs: l.initial_cseqs.into(),
            last_invite: l.last_invite,
            last_activity: l.last_activity,
            last_refresh: l.last_refresh.into(),
            challenged_at: l.challenged_at.into(),
            cancelled_at: l.cancelled_at.into(),
            timer: OptTime::NONE,
            t1_seen: None,
            acct: 0,
            suspect: false,
            media: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegStatsV1 {
    pub legs_started: u64,
    pub legs_finished: u64,
    pub retransmissions: u64,
    pub challenges: u64,
    pub merged_invites: u64,
    pub orphans: u64,
    pub late_responses: u64,
    pub cancel_after_answer: u64,
    pub legs_evicted: u64,
    #[serde(default)]
    pub adopted: u64,
    pub by_end: BTreeMap<String, u64>,
}

impl From<&LegStats> for LegStatsV1 {
    fn from(s: &LegStats) -> Self {
        LegStatsV1 {
            legs_started: s.legs_started,
            legs_finished: s.legs_finished,
            retransmissions: s.retransmissions,
            challenges: s.challenges,
            merged_invites: s.merged_invites,
            orphans: s.orphans,
            late_responses: s.late_responses,
            cancel_after_answer: s.cancel_after_answer,
            legs_evicted: s.legs_evicted,
            adopted: s.adopted,
            by_end: s.by_end.clone(),
        }
    }
}

impl From<LegStatsV1> for LegStats {
    fn from(s: LegStatsV1) -> Self {
        LegStats {
            legs_started: s.legs_started,
            legs_finished: s.legs_finished,
            retransmissions: s.retransmissions,
            challenges: s.challenges,
            merged_invites: s.merged_invites,
            orphans: s.orphans,
            late_responses: s.late_responses,
            cancel_after_answer: s.cancel_after_answer,
            legs_evicted: s.legs_evicted,
            adopted: s.adopted,
            by_end: s.by_end,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegInfoV1 {
    pub id: u64,
    pub dst: SocketAddr,
    pub started: Timestamp,
    pub ringing: Option<Timestamp>,
    pub answered: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    pub end: Option<EndReasonV1>,
    pub ended_by: Option<SideV1>,
    pub partial: bool,
    pub callback_header: bool,
}

impl From<&call::LegInfo> for LegInfoV1 {
    fn from(l: &call::LegInfo) -> Self {
        LegInfoV1 {
            id: l.id.0,
            dst: l.dst,
            started: l.started,
            ringing: l.ringing.into(),
            answered: l.answered.into(),
            ended: l.ended.into(),
            end: opt(l.end),
            ended_by: opt(l.ended_by),
            partial: l.partial,
            callback_header: l.callback_header,
        }
    }
}

impl From<LegInfoV1> for call::LegInfo {
    fn from(l: LegInfoV1) -> Self {
        call::LegInfo {
            id: LegId(l.id),
            dst: l.dst,
            started: l.started,
            ringing: l.ringing.into(),
            answered: l.answered.into(),
            ended: l.ended.into(),
            end: opt(l.end),
            ended_by: opt(l.ended_by),
            partial: l.partial,
            callback_header: l.callback_header,
            // not stored: a restored call's trunk leg brings it when it ends
            final_status: None,
            // not stored: a directed pickup after a restart is read as group pickup
            dialled: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCallV1 {
    pub seq: u64,
    pub practice: String,
    /// Keyed hash of the caller (never the number).
    pub caller: Option<NumHash>,
    pub trunk_call_id: String,
    pub trunk: LegInfoV1,
    pub direct_staff: bool,
    pub direct_auto: Option<AutoV1>,
    pub staff: Vec<LegInfoV1>,
    pub auto: Vec<(AutoV1, LegInfoV1)>,
    pub correlation: CorrelationV1,
    pub settle_until: Option<Timestamp>,
}

impl From<&call::OpenCall> for OpenCallV1 {
    fn from(c: &call::OpenCall) -> Self {
        OpenCallV1 {
            seq: c.seq,
            practice: c.practice.to_string(),
            caller: c.caller,
            trunk_call_id: c.trunk_call_id.to_string(),
            trunk: (&c.trunk).into(),
            direct_staff: c.direct_staff,
            direct_auto: opt(c.direct_auto),
            staff: c.staff.iter().map(Into::into).collect(),
            auto: c
                .auto
                .iter()
                .map(|(k, l)| ((*k).into(), l.into()))
                .collect(),
            correlation: c.correlation.into(),
            settle_until: c.settle_until.into(),
        }
    }
}

impl From<OpenCallV1> for call::OpenCall {
    fn from(c: OpenCallV1) -> Self {
        call::OpenCall {
            seq: c.seq,
            practice: c.practice.into(),
            caller: c.caller,
            trunk_call_id: c.trunk_call_id.into(),
            trunk: c.trunk.into(),
            direct_staff: c.direct_staff,
            direct_auto: opt(c.direct_auto),
            staff: c.staff.into_iter().map(Into::into).collect(),
            auto: c
                .auto
                .into_iter()
                .map(|(k, l)| (k.into(), l.into()))
                .collect(),
            correlation: c.correlation.into(),
            settle_until: c.settle_until.into(),
            // not stored: a restored call is never taken for a scanner's
            guard: Default::default(),
            // not in version 1: after a restart, legs are tied by the other signals
            signals: Default::default(),
            transfer: Default::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRequestV1 {
    pub seq: u64,
    pub practice: String,
    pub caller: String,
    pub requested: Timestamp,
    pub until: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundV1 {
    pub at: Timestamp,
    pub callee: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStatsV1 {
    pub calls: u64,
    pub by_outcome: BTreeMap<String, u64>,
    pub open_calls: u64,
    pub uncorrelated_legs: u64,
    pub outbound_legs: u64,
    pub other_legs: u64,
    pub b2bua_ambiguous: u64,
    pub callbacks_made: u64,
    pub partial_calls: u64,
    pub from_configured_carrier: u64,
    pub direct_to_staff: u64,
}

impl From<&CallStats> for CallStatsV1 {
    fn from(s: &CallStats) -> Self {
        CallStatsV1 {
            calls: s.calls,
            by_outcome: s.by_outcome.clone(),
            open_calls: s.open_calls,
            uncorrelated_legs: s.uncorrelated_legs,
            outbound_legs: s.outbound_legs,
            other_legs: s.other_legs,
            b2bua_ambiguous: s.b2bua_ambiguous,
            callbacks_made: s.callbacks_made,
            partial_calls: s.partial_calls,
            from_configured_carrier: s.from_configured_carrier,
            direct_to_staff: s.direct_to_staff,
        }
    }
}

impl From<CallStatsV1> for CallStats {
    fn from(s: CallStatsV1) -> Self {
        CallStats {
            calls: s.calls,
            by_outcome: s.by_outcome,
            open_calls: s.open_calls,
            uncorrelated_legs: s.uncorrelated_legs,
            outbound_legs: s.outbound_legs,
            other_legs: s.other_legs,
            b2bua_ambiguous: s.b2bua_ambiguous,
            callbacks_made: s.callbacks_made,
            partial_calls: s.partial_calls,
            from_configured_carrier: s.from_configured_carrier,
            direct_to_staff: s.direct_to_staff,
            // not in version 1: counted since the process started
            transfers: 0,
            forwarded_out: 0,
            pickups: 0,
            not_ours: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct LegsV1 {
    pub next_id: u64,
    pub legs: Vec<LegV1>,
    pub stats: LegStatsV1,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CallsV1 {
    pub next_seq: u64,
    pub open: Vec<OpenCallV1>,
    pub requests: Vec<CallbackRequestV1>,
    pub outbound: Vec<OutboundV1>,
    pub stats: CallStatsV1,
}

/// The engine state as 0.1.0 wrote it (the `snapshot` member of
/// `snapshot.json`). Read only: this build writes version 2 (`v2.rs`).
#[derive(Clone, Debug, Deserialize)]
pub struct SnapshotV1 {
    pub version: u32,
    pub legs: LegsV1,
    pub calls: Option<CallsV1>,
    pub last_packet: Option<Timestamp>,
}

impl From<SnapshotV1> for EngineSnapshot {
    fn from(s: SnapshotV1) -> Self {
        EngineSnapshot {
            legs: LegSnapshot {
                next_id: s.legs.next_id,
                legs: s.legs.legs.into_iter().map(Into::into).collect(),
                stats: s.legs.stats.into(),
            },
            calls: s.calls.map(|c| CallSnapshot {
                next_seq: c.next_seq,
                open: c.open.into_iter().map(Into::into).collect(),
                requests: c
                    .requests
                    .into_iter()
                    .map(|r| call::CallbackRequest {
                        seq: r.seq,
                        practice: r.practice,
                        caller: r.caller,
                        requested: r.requested,
                        until: r.until,
                    })
                    .collect(),
                outbound: c
                    .outbound
                    .into_iter()
                    .map(|o| call::Outbound {
                        at: o.at,
                        callee: o.callee,
                    })
                    .collect(),
                stats: c.stats.into(),
            }),
            last_packet: s.last_packet,
        }
    }
}

impl From<&call::CallbackRequest> for CallbackRequestV1 {
    fn from(q: &call::CallbackRequest) -> Self {
        CallbackRequestV1 {
            seq: q.seq,
            practice: q.practice.clone(),
            caller: q.caller.clone(),
            requested: q.requested,
            until: q.until,
        }
    }
}

impl From<&call::Outbound> for OutboundV1 {
    fn from(o: &call::Outbound) -> Self {
        OutboundV1 {
            at: o.at,
            callee: o.callee.clone(),
        }
    }
}

// ----------------------------------------------------------------- gaps ---

/// A stretch of time whose packets were not seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapV1 {
    pub from: Timestamp,
    pub to: Timestamp,
    pub reason: String,
}

/// The recent gaps (`meta` key `gaps`). 0.1.0 wrote a bare list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapsV1 {
    pub v: u32,
    pub gaps: Vec<GapV1>,
}

// --------------------------------------------------------------- upload ---

/// A day document waiting to be delivered (`outbox` tree, key
/// `YYYY-MM-DD` 0x00 practice). A newer revision of the same practice-day
/// replaces an undelivered older one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItemV1 {
    pub v: u32,
    pub practice: String,
    pub date: chrono::NaiveDate,
    pub revision: u64,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The document exactly as it is sent.
    pub body: String,
    pub enqueued_at: Timestamp,
    pub attempts: u32,
    pub next_attempt: Timestamp,
    pub last_error: Option<String>,
    /// Refused by the collector for a reason a retry cannot fix: kept, not
    /// sent again until the configuration is reloaded.
    pub parked: Option<String>,
}

/// What was offered and delivered for one practice-day (`uploads` tree, key
/// practice 0x00 `YYYY-MM-DD`): revisions are never reused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStateV1 {
    pub v: u32,
    /// The last revision given to a document of this practice-day.
    pub revision: u64,
    /// Hash of that document's content (without revision and time).
    pub content: String,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub delivered_revision: u64,
    pub delivered_at: Option<Timestamp>,
}

/// The agent's view during one local hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourV1 {
    /// Seconds during which a capture source was running.
    pub up_s: u32,
    /// Seconds during which the view was handsets-only (partial).
    pub partial_view_s: u32,
    pub messages: u64,
    pub parse_errors: u64,
    pub dropped: u64,
    pub b2bua_ambiguous: u64,
}

impl HourV1 {
    pub fn add(&mut self, o: &HourV1) {
        self.up_s = self.up_s.saturating_add(o.up_s).min(3600 * 2);
        self.partial_view_s = self
            .partial_view_s
            .saturating_add(o.partial_view_s)
            .min(3600 * 2);
        self.messages += o.messages;
        self.parse_errors += o.parse_errors;
        self.dropped += o.dropped;
        self.b2bua_ambiguous += o.b2bua_ambiguous;
    }
}

/// A local date's activity by hour (`activity` tree, key `YYYY-MM-DD`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityV1 {
    pub v: u32,
    pub hours: Vec<HourV1>,
}

impl Default for ActivityV1 {
    fn default() -> Self {
        ActivityV1 {
            v: 1,
            hours: vec![HourV1::default(); 24],
        }
    }
}
