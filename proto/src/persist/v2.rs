//! Version 2 of the engine snapshot (`snapshot.json`, written since 0.2):
//! version 1, and for each call in progress what ties its later legs to it
//! after a restart:
//!
//! - its transfer: the caller's new legs after a REFER or a pickup, their
//!   Call-IDs, whether a REFER was seen and which legs were pickups.
//!   Version 1 kept none of it, so a call transferred more than a snapshot
//!   (30 s) before a restart, or at a clean stop, was cut short at its
//!   first leg's end and its new leg belonged to no call;
//! - the trunk leg's Session-ID UUID and the number the caller dialled,
//!   which tie a B2BUA's legs to the call (version 1: the heuristic alone).
//!
//! Not kept, in either version: the media address key (in memory only,
//! see `sip::media_key`), the scanner rule's notes and legs dialling a
//! pickup code that the PBX has not answered yet (seconds at most).
//!
//! Everything else is version 1's shape: [`SnapshotV2`] is read by serde
//! with each open call's version-1 members and the two new ones side by
//! side, and a version-1 snapshot is read as before with those left empty.

use super::v1::{
    CallStatsV1, CallbackRequestV1, CallsV1, LegInfoV1, LegStatsV1, LegV1, LegsV1, OpenCallV1,
    OutboundV1, SnapshotV1,
};
use crate::call::{self, CallSignals, CallSnapshotRef, MaybeTransfer, Transfer};
use crate::engine::{EngineSnapshot, EngineSnapshotRef};
use crate::leg::{LegId, LegSnapshotRef};
use crate::number::NumHash;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize, Serializer};

/// What the trunk leg carried that a B2BUA's legs repeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalsV2 {
    /// The caller's Session-ID UUID (lower-case hex).
    pub session: Option<String>,
    /// Keyed hash of the dialled number (never the number).
    pub dialled: Option<NumHash>,
}

/// The caller's legs after a transfer or a pickup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferV2 {
    pub legs: Vec<LegInfoV1>,
    pub call_ids: Vec<String>,
    /// A REFER was seen on one of the call's legs.
    pub referred: bool,
    /// Of `legs`, the pickups (their callee is the caller).
    pub picked: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCallV2 {
    #[serde(flatten)]
    pub call: OpenCallV1,
    pub signals: SignalsV2,
    pub transfer: TransferV2,
}

impl From<&call::OpenCall> for OpenCallV2 {
    fn from(c: &call::OpenCall) -> Self {
        OpenCallV2 {
            call: c.into(),
            signals: SignalsV2 {
                session: c.signals.session.clone(),
                dialled: c.signals.dialled,
            },
            transfer: TransferV2 {
                legs: c.transfer.legs.iter().map(Into::into).collect(),
                call_ids: c.transfer.call_ids.iter().map(|c| c.to_string()).collect(),
                referred: c.transfer.referred,
                picked: c.transfer.picked.iter().map(|l| l.0).collect(),
            },
        }
    }
}

impl From<OpenCallV2> for call::OpenCall {
    fn from(c: OpenCallV2) -> Self {
        let mut out: call::OpenCall = c.call.into();
        restore(&mut out, c.signals, c.transfer);
        out
    }
}

/// Puts back what version 2 adds to a call read as version 1.
fn restore(call: &mut call::OpenCall, signals: SignalsV2, transfer: TransferV2) {
    call.signals = CallSignals {
        session: signals.session,
        dialled: signals.dialled,
        media: None,
    };
    call.transfer = MaybeTransfer::new(Transfer {
        legs: transfer.legs.into_iter().map(Into::into).collect(),
        call_ids: transfer.call_ids.into_iter().map(Into::into).collect(),
        referred: transfer.referred,
        picked: transfer.picked.into_iter().map(LegId).collect(),
    });
}

#[derive(Clone, Debug, Deserialize)]
pub struct CallsV2 {
    pub next_seq: u64,
    pub open: Vec<OpenCallV2>,
    pub requests: Vec<CallbackRequestV1>,
    pub outbound: Vec<OutboundV1>,
    pub stats: CallStatsV1,
}

/// The engine state (the `snapshot` member of `snapshot.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct SnapshotV2 {
    pub version: u32,
    pub legs: LegsV1,
    pub calls: Option<CallsV2>,
    pub last_packet: Option<Timestamp>,
}

impl From<SnapshotV2> for EngineSnapshot {
    fn from(s: SnapshotV2) -> Self {
        let (calls, extra) = match s.calls {
            Some(c) => {
                let (open, extra): (Vec<OpenCallV1>, Vec<(SignalsV2, TransferV2)>) = c
                    .open
                    .into_iter()
                    .map(|o| (o.call, (o.signals, o.transfer)))
                    .unzip();
                (
                    Some(CallsV1 {
                        next_seq: c.next_seq,
                        open,
                        requests: c.requests,
                        outbound: c.outbound,
                        stats: c.stats,
                    }),
                    extra,
                )
            }
            None => (None, Vec::new()),
        };
        let mut snap: EngineSnapshot = SnapshotV1 {
            version: 1,
            legs: s.legs,
            calls,
            last_packet: s.last_packet,
        }
        .into();
        if let Some(c) = snap.calls.as_mut() {
            for (call, (signals, transfer)) in c.open.iter_mut().zip(extra) {
                restore(call, signals, transfer);
            }
        }
        snap
    }
}

/// Writes [`SnapshotV2`] from the engine's borrowed state, converting one
/// element at a time (a large state is never held twice).
pub struct SnapshotV2Writer<'a>(pub &'a EngineSnapshotRef<'a>);

struct Seq<I>(std::cell::RefCell<Option<I>>);

impl<I: Iterator<Item = T>, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let it = self.0.borrow_mut().take().expect("serialised once");
        s.collect_seq(it)
    }
}

fn seq<I: Iterator>(it: I) -> Seq<I> {
    Seq(std::cell::RefCell::new(Some(it)))
}

impl Serialize for SnapshotV2Writer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(bound(serialize = "Seq<I>: Serialize"))]
        struct Legs<I> {
            next_id: u64,
            legs: Seq<I>,
            stats: LegStatsV1,
        }
        #[derive(Serialize)]
        #[serde(bound(serialize = "Seq<I>: Serialize"))]
        struct Calls<I> {
            next_seq: u64,
            open: Seq<I>,
            requests: Vec<CallbackRequestV1>,
            outbound: Vec<OutboundV1>,
            stats: CallStatsV1,
        }
        #[derive(Serialize)]
        struct Doc<L, C> {
            version: u32,
            legs: L,
            calls: Option<C>,
            last_packet: Option<Timestamp>,
        }
        let r = self.0;
        let legs: &LegSnapshotRef<'_> = &r.legs;
        let calls: Option<&CallSnapshotRef<'_>> = r.calls.as_ref();
        Doc {
            version: 2,
            legs: Legs {
                next_id: legs.next_id,
                legs: seq(legs.legs.iter().map(|l| LegV1::from(*l))),
                stats: legs.stats.into(),
            },
            calls: calls.map(|c| Calls {
                next_seq: c.next_seq,
                open: seq(c.open.iter().map(|o| OpenCallV2::from(*o))),
                requests: c.requests.iter().map(CallbackRequestV1::from).collect(),
                outbound: c.outbound.iter().map(OutboundV1::from).collect(),
                stats: c.stats.into(),
            }),
            last_packet: r.last_packet,
        }
        .serialize(s)
    }
}
