//! The bundled "morning" capture: `tests/fixtures/morning.pcap`, a
//! Tuesday morning (4 November 2025, Europe/London) of two GP practices
//! sharing one PBX, checked against `morning.expected.json`.
//!
//! `scripts/make-morning` made all three files (and `morning.toml`, the
//! site file). It ran the calls of [`plan`] through a real Kamailio
//! (`tests/kamailio/kamailio.cfg`) with sipp as every caller, handset and
//! automated endpoint (`cbt_tests::kamailio`), in batches, each captured on
//! `lo`; then shifted each batch's capture with `editcap -t` to its time of
//! the morning (before 08:00, 08:00-09:59, 10:00-11:59) and merged them with
//! `mergecap`. The expected figures were computed by the generator from the
//! plan and sipp's logs (shifted the same way), never from cbt-agent: each
//! inbound call with its practice, outcome, wait and duration, and per
//! practice the indicators by time band, the wait and duration buckets,
//! and the nine Data Provision Notice metrics.
//!
//! [`morning_capture_matches_its_expected_figures`] needs neither sipp nor
//! Kamailio: it replays the committed capture with `cbt-agent replay` (its
//! library entry point) and compares. [`generate`] is the generator; it
//! runs only when `scripts/make-morning` asks for it.

use cbt_proto::call::Outcome;
use cbt_proto::Timestamp;
use cbt_tests::kamailio::{
    self, Act, Differences, Intent, Observed, PlannedCall, Reply, Topology, A_CALLBACK, A_IVR,
    A_MAIN, A_WELCOME, B_CALLBACK, B_IVR, B_MAIN, CALLER, LAG_US, PRACTICE_A, PRACTICE_B,
    UNASSIGNED, UNLISTED,
};
use cbt_tests::sipp::{CaptureError, LogEvent};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The morning's date: a Tuesday, not a bank holiday. In November the UK
/// keeps GMT, so local time is UTC.
const DATE: &str = "2025-11-04";
/// 2025-11-04T00:00:00Z.
const MIDNIGHT: i64 = 1_762_214_400;

/// Ringing before voicemail.
const NOANSWER_MS: u32 = 8000;

/// The batches: when each starts (local time, seconds after midnight) and
/// how many calls from the carrier it has.
const BATCHES: [(&str, i64, usize); 6] = [
    ("07:41", 7 * 3600 + 41 * 60, 24),
    ("08:06", 8 * 3600 + 6 * 60, 54),
    ("09:22", 9 * 3600 + 22 * 60, 48),
    ("10:04", 10 * 3600 + 4 * 60, 54),
    ("11:12", 11 * 3600 + 12 * 60, 48),
    ("11:47", 11 * 3600 + 47 * 60, 30),
];

/// `Time_Category` of a local time of day (seconds after midnight).
fn band(secs: i64) -> &'static str {
    match secs / 60 {
        0..=359 => "00:00-05:59",
        360..=479 => "06:00-07:59",
        480..=599 => "08:00-09:59",
        600..=719 => "10:00-11:59",
        720..=839 => "12:00-13:59",
        840..=959 => "14:00-15:59",
        960..=1079 => "16:00-17:59",
        1080..=1109 => "18:00-18:29",
        _ => "18:30-23:59",
    }
}

/// `Core_Category` on a working weekday that is not a bank holiday.
fn core(secs: i64) -> &'static str {
    match secs / 60 {
        480..=599 => "Core_8_10",
        600..=1109 => "Core_10_1830",
        _ => "Non-Core",
    }
}

/// The default buckets: whole seconds, truncated.
fn bucket(us: i64) -> &'static str {
    match us.max(0) / 1_000_000 {
        0 => "0",
        1..=30 => "1_30",
        31..=60 => "31_60",
        61..=120 => "61_120",
        121..=180 => "121_180",
        181..=240 => "181_240",
        241..=300 => "241_300",
        _ => ">300",
    }
}

/// Distance (microseconds) from the nearest bucket edge (1, 31, 61, 121,
/// 181, 241, 301 s): values closer than the tolerance could fall either side.
fn edge_distance(us: i64) -> i64 {
    [1, 31, 61, 121, 181, 241, 301]
        .iter()
        .map(|s| (us - s * 1_000_000).abs())
        .min()
        .unwrap_or(i64::MAX)
}

fn local_secs(t: Timestamp) -> i64 {
    t.micros().div_euclid(1_000_000) - MIDNIGHT
}

/// A small deterministic generator (xorshift64*), so the plan is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `k * 1000 + offset` for k in `lo..=hi`: milliseconds that keep
    /// waits and durations half a second away from whole seconds.
    fn half(&mut self, lo: u32, hi: u32, offset: u32) -> u32 {
        (lo + self.below((hi - lo + 1) as u64) as u32) * 1000 + offset
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        let total: u32 = items.iter().map(|(_, w)| w).sum();
        let mut r = self.below(total as u64) as u32;
        for (t, w) in items {
            if r < *w {
                return *t;
            }
            r -= w;
        }
        items[items.len() - 1].0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Answered,
    AnsweredStaffHangsUp,
    Abandoned,
    AllBusy,
    Voicemail,
    VoicemailHangsUp,
    Ivr,
    IvrHangsUp,
    Callback,
    /// Practice A's line with a welcome message (early media), then the
    /// reception's handsets.
    WelcomeAnswered,
    WelcomeAbandoned,
}

/// The morning, batch by batch: the carrier's calls to both practices
/// (and a few to a number nobody listed), every outcome, several at once;
/// the handsets' outbound and internal calls; callbacks for most requests,
/// in a later batch.
fn plan() -> Vec<Vec<PlannedCall>> {
    use Kind::*;
    use Reply::*;
    let mut rng = Rng(0x5ee_dcb7_2025_1104);
    let mut number = 0u32;
    let mut pending: Vec<(String, String, &'static str)> = Vec::new();
    let mut batches = Vec::new();
    for (b, (_, _, n)) in BATCHES.iter().enumerate() {
        let mut calls = Vec::new();
        let mut requests = Vec::new();
        for i in 0..*n {
            let practice = rng.weighted(&[(PRACTICE_A, 58u32), (PRACTICE_B, 38), (UNASSIGNED, 4)]);
            let kind = match practice {
                UNASSIGNED => rng.weighted(&[(Answered, 3u32), (Abandoned, 1)]),
                PRACTICE_A => rng.weighted(&[
                    (Answered, 24u32),
                    (AnsweredStaffHangsUp, 5),
                    (Abandoned, 8),
                    (AllBusy, 3),
                    (Voicemail, 5),
                    (VoicemailHangsUp, 2),
                    (Ivr, 6),
                    (IvrHangsUp, 2),
                    (Callback, 5),
                    (WelcomeAnswered, 3),
                    (WelcomeAbandoned, 2),
                ]),
                _ => rng.weighted(&[
                    (Answered, 26u32),
                    (AnsweredStaffHangsUp, 6),
                    (Abandoned, 9),
                    (AllBusy, 3),
                    (Voicemail, 5),
                    (VoicemailHangsUp, 2),
                    (Ivr, 6),
                    (IvrHangsUp, 2),
                    (Callback, 5),
                ]),
            };
            let main = match practice {
                PRACTICE_A => A_MAIN,
                PRACTICE_B => B_MAIN,
                _ => UNLISTED,
            };
            // the carrier writes numbers in any form
            let written = |n: &str, r: u64| match r {
                0 => n.to_string(),
                1 => format!("44{}", &n[1..]),
                _ => format!("+44{}", &n[1..]),
            };
            let form = rng.below(3);
            // handsets the number rings, and which answers
            let ring: Vec<&'static str> = if practice == PRACTICE_B {
                vec!["h3"]
            } else {
                vec!["h1", "h2"]
            };
            let answerer = ring[rng.below(ring.len() as u64) as usize];
            let ringing = |except: Option<&str>| -> Vec<(&'static str, Reply)> {
                ring.iter()
                    .filter(|h| Some(**h) != except)
                    .map(|h| (*h, Ring))
                    .collect()
            };
            let after = rng.half(0, 6, 490);
            let talk = rng.half(0, 8, 500);
            let (dialled, act, replies, outcome, abandoned) = match kind {
                Answered | AnsweredStaffHangsUp => {
                    let reply = if kind == Answered {
                        Answer { after_ms: after }
                    } else {
                        AnswerThenHangUp {
                            after_ms: after,
                            talk_ms: talk,
                        }
                    };
                    let mut r = vec![(answerer, reply)];
                    r.extend(ringing(Some(answerer)));
                    let act = if kind == Answered {
                        Act::Talk { ms: talk }
                    } else {
                        Act::FarEnd
                    };
                    (written(main, form), act, r, Outcome::Answered, false)
                }
                Abandoned => (
                    written(main, form),
                    Act::Cancel {
                        ms: rng.half(1, 6, 490),
                    },
                    ringing(None),
                    Outcome::Missed,
                    true,
                ),
                AllBusy => {
                    let r = ring
                        .iter()
                        .map(|h| {
                            (
                                *h,
                                Busy {
                                    after_ms: 190 + 100 * rng.below(8) as u32,
                                },
                            )
                        })
                        .collect();
                    (written(main, form), Act::Busy, r, Outcome::Missed, false)
                }
                Voicemail | VoicemailHangsUp => {
                    let mut r = ringing(None);
                    let act = if kind == Voicemail {
                        r.push(("vm", Answer { after_ms: 190 }));
                        Act::Talk {
                            ms: rng.half(2, 5, 500),
                        }
                    } else {
                        r.push((
                            "vm",
                            AnswerThenHangUp {
                                after_ms: 190,
                                talk_ms: rng.half(2, 5, 500),
                            },
                        ));
                        Act::FarEnd
                    };
                    (written(main, form), act, r, Outcome::Missed, false)
                }
                Ivr | IvrHangsUp => {
                    let ddi = if practice == PRACTICE_A { A_IVR } else { B_IVR };
                    if kind == Ivr {
                        (
                            written(ddi, form),
                            Act::Talk {
                                ms: rng.half(1, 6, 500),
                            },
                            vec![("ivr", Answer { after_ms: 90 })],
                            Outcome::EndedInIvr,
                            true,
                        )
                    } else {
                        let r = vec![(
                            "ivr",
                            AnswerThenHangUp {
                                after_ms: 90,
                                talk_ms: rng.half(2, 6, 500),
                            },
                        )];
                        (
                            written(ddi, form),
                            Act::FarEnd,
                            r,
                            Outcome::EndedInIvr,
                            false,
                        )
                    }
                }
                WelcomeAnswered | WelcomeAbandoned => {
                    // the caller hears 1.49 s of welcome, then ringing; one
                    // who gives up does so after the ringing began
                    let mut r = vec![("ivr", Early { after_ms: 1490 })];
                    let (act, outcome, abandoned) = if kind == WelcomeAnswered {
                        r.push((answerer, Answer { after_ms: after }));
                        r.extend(ringing(Some(answerer)));
                        (Act::Talk { ms: talk }, Outcome::Answered, false)
                    } else {
                        r.extend(ringing(None));
                        let ms = rng.half(2, 5, 490);
                        (Act::Cancel { ms }, Outcome::Missed, true)
                    };
                    (written(A_WELCOME, form), act, r, outcome, abandoned)
                }
                Callback => {
                    let ddi = if practice == PRACTICE_A {
                        A_CALLBACK
                    } else {
                        B_CALLBACK
                    };
                    let r = vec![(
                        "cb",
                        AnswerThenHangUp {
                            after_ms: 90,
                            talk_ms: rng.half(1, 2, 0),
                        },
                    )];
                    (
                        written(ddi, form),
                        Act::FarEnd,
                        r,
                        Outcome::CallbackRequested,
                        false,
                    )
                }
            };
            number += 1;
            let label = format!("m{b}-{i:02}-{kind:?}").to_lowercase();
            let caller = format!("+447700900{number:03}");
            if kind == Callback {
                requests.push((label.clone(), caller.clone(), practice));
            }
            calls.push(PlannedCall {
                label,
                from: CALLER.into(),
                caller,
                dialled,
                at_ms: (i as u32) * 300 + rng.below(100) as u32,
                act,
                replies,
                intent: Intent::Inbound { outcome, abandoned },
            });
        }
        // one long conversation (the 31_60 duration bucket)
        if b == 2 {
            if let Some(c) = calls.iter_mut().find(|c| {
                c.intent
                    == Intent::Inbound {
                        outcome: Outcome::Answered,
                        abandoned: false,
                    }
                    && matches!(c.act, Act::Talk { .. })
            }) {
                c.act = Act::Talk { ms: 33_500 };
            }
        }
        // the handsets: callbacks for the earlier batches' requests (four
        // in five), a couple of outbound calls, an internal call
        let mut at = 500;
        for (of, caller, practice) in pending.drain(..) {
            if rng.below(5) == 4 {
                continue;
            }
            let (from, ext) = if practice == PRACTICE_B {
                ("d3", "221")
            } else {
                ("d1", "211")
            };
            calls.push(PlannedCall {
                label: format!("m{b}-callback-{of}"),
                from: from.into(),
                caller: ext.into(),
                // national form, as a receptionist dials it
                dialled: format!("0{}", &caller[3..]),
                at_ms: at,
                act: Act::Talk {
                    ms: rng.half(1, 4, 500),
                },
                replies: vec![("out", Answer { after_ms: 490 })],
                intent: Intent::CallbackFor(of),
            });
            at += 700;
        }
        for k in 0..2u32 {
            calls.push(PlannedCall {
                label: format!("m{b}-out-{k}"),
                from: "d2".into(),
                caller: "212".into(),
                dialled: format!("01134960{:03}", b as u32 * 10 + k),
                at_ms: 1000 + 4000 * k,
                act: Act::Talk {
                    ms: rng.half(1, 4, 500),
                },
                replies: vec![("out", Answer { after_ms: 990 })],
                intent: Intent::NotInbound,
            });
        }
        let (from, ext, to) = if b % 2 == 0 {
            ("d1", "211", "h3")
        } else {
            ("d3", "221", "h1")
        };
        calls.push(PlannedCall {
            label: format!("m{b}-internal"),
            from: from.into(),
            caller: ext.into(),
            dialled: if to == "h3" {
                "221".into()
            } else {
                "211".into()
            },
            at_ms: 2500,
            act: Act::Talk {
                ms: rng.half(1, 3, 500),
            },
            replies: vec![(to, Answer { after_ms: 790 })],
            intent: Intent::NotInbound,
        });
        pending = requests;
        batches.push(calls);
    }
    batches
}

fn secs3(us: i64) -> f64 {
    (us as f64 / 1000.0).round() / 1000.0
}

fn mean(v: &[i64]) -> Option<f64> {
    (!v.is_empty()).then(|| secs3((v.iter().sum::<i64>() as f64 / v.len() as f64).round() as i64))
}

fn median(v: &[i64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let n = s.len();
    Some(if n % 2 == 1 {
        secs3(s[n / 2])
    } else {
        secs3((s[n / 2 - 1] + s[n / 2]) / 2)
    })
}

/// The expected figures: every inbound call, and per practice what the
/// report must say.
fn expected(observed: &[Observed], not_inbound: usize) -> Value {
    let t = |x: Option<Timestamp>| x.map(|t| t.to_rfc3339());
    let calls: Vec<Value> = observed
        .iter()
        .map(|o| {
            json!({
                "label": o.label,
                "practice": o.practice,
                "started": o.started.to_rfc3339(),
                "time_category": band(local_secs(o.started)),
                "outcome": o.outcome.name(),
                "abandoned": o.abandoned,
                "ended_by": if o.ended_by_caller { "caller" } else { "practice" },
                "wait_s": o.wait_us.map(secs3),
                "duration_s": o.duration_us.map(secs3),
                "voicemail": t(o.voicemail),
                "callback_requested": t(o.callback_requested),
                "callback_made": t(o.callback_made),
            })
        })
        .collect();
    let mut practices = serde_json::Map::new();
    for p in [PRACTICE_A, PRACTICE_B, UNASSIGNED] {
        let mine: Vec<&Observed> = observed.iter().filter(|o| o.practice == p).collect();
        let mut totals: BTreeMap<&str, u64> = [
            "CBT001", "CBT002", "CBT003", "CBT004", "CBT005", "CBT006", "CBT007",
        ]
        .iter()
        .map(|c| (*c, 0))
        .collect();
        let mut by_band: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        let mut by_wait: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        let mut by_duration: BTreeMap<&str, u64> = BTreeMap::new();
        let mut outcomes: BTreeMap<&str, u64> =
            Outcome::ALL.iter().map(|o| (o.name(), 0)).collect();
        let (mut answered_waits, mut abandoned_waits, mut durations) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut abandoned_waiting, mut abandoned_in_ivr, mut voicemail, mut busy) =
            (0u64, 0u64, 0u64, 0u64);
        let mut count = |code: &'static str, at: Timestamp, totals: &mut BTreeMap<&str, u64>| {
            *totals.get_mut(code).expect("code") += 1;
            *by_band
                .entry(code)
                .or_default()
                .entry(band(local_secs(at)))
                .or_default() += 1;
        };
        for o in &mine {
            count("CBT001", o.started, &mut totals);
            *outcomes.get_mut(o.outcome.name()).expect("outcome") += 1;
            let code = match o.outcome {
                Outcome::EndedInIvr => "CBT002",
                Outcome::Answered => "CBT003",
                Outcome::Missed => "CBT004",
                Outcome::CallbackRequested => "CBT005",
            };
            count(code, o.started, &mut totals);
            if let Some(m) = o.callback_made {
                count("CBT006", m, &mut totals);
            }
            match o.outcome {
                Outcome::Answered => {
                    *totals.get_mut("CBT007").expect("code") += 1;
                    let w = o.wait_us.expect("wait");
                    let d = o.duration_us.expect("duration");
                    *by_wait
                        .entry(bucket(w))
                        .or_default()
                        .entry(core(local_secs(o.started)))
                        .or_default() += 1;
                    *by_duration.entry(bucket(d)).or_default() += 1;
                    answered_waits.push(w);
                    durations.push(d);
                }
                Outcome::Missed if o.abandoned => {
                    abandoned_waiting += 1;
                    abandoned_waits.push(o.wait_us.expect("wait"));
                }
                Outcome::EndedInIvr if o.abandoned => abandoned_in_ivr += 1,
                _ => {}
            }
            if o.voicemail.is_some() {
                voicemail += 1;
            }
            if o.outcome == Outcome::Missed && !o.ended_by_caller && o.voicemail.is_none() {
                busy += 1;
            }
        }
        let summary = |v: &[i64]| {
            json!({
                "n": v.len(),
                "mean": mean(v),
                "median": median(v),
                "min": v.iter().min().map(|x| secs3(*x)),
                "max": v.iter().max().map(|x| secs3(*x)),
            })
        };
        practices.insert(
            p.to_string(),
            json!({
                "totals": totals,
                "by_time_category": by_band,
                "cbt003_by_wait": by_wait,
                "cbt007_by_duration": by_duration,
                "outcomes": outcomes,
                "abandoned": abandoned_waiting + abandoned_in_ivr,
                "abandoned_waiting": abandoned_waiting,
                "abandoned_in_ivr": abandoned_in_ivr,
                "voicemail": voicemail,
                "busy": busy,
                "answered_wait_s": summary(&answered_waits),
                "duration_s": summary(&durations),
                "abandoned_wait_s": summary(&abandoned_waits),
            }),
        );
    }
    json!({
        "about": "Expected figures of tests/fixtures/morning.pcap, computed by scripts/make-morning from its plan (tests/morning.rs) and sipp's logs, never from cbt-agent. Times UTC (= Europe/London local time in November); waits and durations in seconds.",
        "date": DATE,
        "timezone": "Europe/London",
        "inbound_calls": observed.len(),
        "outbound_and_internal_calls": not_inbound,
        "callbacks_made": observed.iter().filter(|o| o.callback_made.is_some()).count(),
        "practices": practices,
        "calls": calls,
    })
}

/// The generator, for `scripts/make-morning` only: with `CBT_MAKE_MORNING`
/// set to a work directory, runs the batches and writes there
/// `batches.tsv` (each batch's capture and its shift in seconds, for
/// `editcap -t`), `morning.expected.json` and `morning.toml`.
#[test]
#[ignore = "run by scripts/make-morning"]
fn generate() {
    let Some(work) = std::env::var_os("CBT_MAKE_MORNING").map(PathBuf::from) else {
        eprintln!("SKIP: set CBT_MAKE_MORNING (scripts/make-morning does)");
        return;
    };
    let Some((tools, kamailio_bin)) = kamailio::tools_or_skip("make-morning") else {
        panic!("make-morning needs sipp, a capture tool and kamailio");
    };
    let batches = plan();
    let mut all_calls = Vec::new();
    let mut all_events: Vec<LogEvent> = Vec::new();
    let mut tsv = String::new();
    for (b, calls) in batches.iter().enumerate() {
        let (name, start, _) = BATCHES[b];
        let dir = work.join(format!("batch{b}"));
        eprintln!("make-morning: batch {b} ({name}): {} calls", calls.len());
        // a batch interrupted from outside (a sipp stopped by someone
        // else's clean-up) is played again
        let mut attempt = 0;
        let run = loop {
            attempt += 1;
            let _ = std::fs::remove_dir_all(&dir);
            let topo = Topology::pick();
            match kamailio::run(&tools, &kamailio_bin, &topo, calls, NOANSWER_MS, &dir) {
                Ok(r) => break r,
                Err(CaptureError::Permission(m)) => panic!("cannot capture on lo: {m}"),
                Err(e) if attempt < 3 => {
                    eprintln!("make-morning: batch {b} failed, playing it again: {e}")
                }
                Err(e) => panic!("batch {b}: {e}"),
            }
        };
        // the shift: the batch's first INVITE at the start of its minute
        let first = run.events.iter().map(|e| e.at).min().expect("events");
        let shift = MIDNIGHT + start - first.micros().div_euclid(1_000_000);
        let _ = writeln!(tsv, "{}\t{shift}", run.pcap.display());
        all_events.extend(run.events.into_iter().map(|mut e| {
            e.at = e.at.add(shift * 1_000_000);
            e
        }));
        all_calls.extend(calls.iter().cloned());
    }
    let (observed, deviations) =
        kamailio::observe(&all_calls, &all_events).unwrap_or_else(|e| panic!("sipp's logs: {e}"));
    assert!(
        deviations.is_empty(),
        "the calls did not go as planned:\n{}",
        deviations.join("\n")
    );
    let close: Vec<String> = observed
        .iter()
        .flat_map(|o| [("wait", o.wait_us), ("duration", o.duration_us)].map(|(f, v)| (o, f, v)))
        .filter_map(|(o, f, v)| {
            v.filter(|v| edge_distance(*v) < 3 * LAG_US)
                .map(|v| format!("{} {f} {v} us", o.label))
        })
        .collect();
    assert!(
        close.is_empty(),
        "too close to a bucket edge (run again):\n{}",
        close.join("\n")
    );
    let not_inbound = all_calls.iter().filter(|c| c.from != CALLER).count();
    let exp = expected(&observed, not_inbound);
    std::fs::write(
        work.join("morning.expected.json"),
        serde_json::to_string_pretty(&exp).expect("JSON") + "\n",
    )
    .expect("write");
    std::fs::write(work.join("morning.toml"), kamailio::site_toml()).expect("write");
    std::fs::write(work.join("batches.tsv"), tsv).expect("write");
    eprintln!(
        "make-morning: {} inbound calls, {not_inbound} outbound or internal",
        observed.len()
    );
}

fn fixtures() -> PathBuf {
    cbt_tests::workspace_root().join("tests/fixtures")
}

fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("morning");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn us_of(v: &Value) -> Option<i64> {
    v.as_f64().map(|s| (s * 1e6).round() as i64)
}

fn ts_of(v: &Value) -> Option<i64> {
    v.as_str().map(|s| kamailio::ts(s).micros())
}

fn exact(report: &mut String, who: &str, want: &Value, got: &Value) {
    if want != got {
        let _ = writeln!(report, "{who}: {got}, expected {want}");
    }
}

/// Keeps the non-zero counts of a JSON object of counts (nested one level
/// or not), so that sparse expectations compare with full tables.
fn nonzero(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, x)| {
                    let x = nonzero(x);
                    let keep = match &x {
                        Value::Number(n) => n.as_u64() != Some(0),
                        Value::Object(o) => !o.is_empty(),
                        _ => true,
                    };
                    keep.then(|| (k.clone(), x))
                })
                .collect(),
        ),
        Value::Array(a) => {
            // [[label, count]] or [[label, {core: count}]] pairs
            let m: serde_json::Map<String, Value> = a
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.clone())))
                .collect();
            nonzero(&Value::Object(m))
        }
        other => other.clone(),
    }
}

#[test]
fn morning_capture_matches_its_expected_figures() {
    let f = fixtures();
    let pcap = f.join("morning.pcap");
    let exp_path = f.join("morning.expected.json");
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(&exp_path)
            .unwrap_or_else(|e| panic!("{}: {e}", exp_path.display())),
    )
    .expect("expected JSON");
    let dir = work_dir();
    let replayed = kamailio::replay(&f.join("morning.toml"), std::slice::from_ref(&pcap), &dir);
    std::fs::write(dir.join("report.txt"), &replayed.report).ok();
    let mut report = String::new();
    let mut d = Differences::default();

    // every inbound call, paired by its start
    let want_calls = exp["calls"].as_array().expect("calls");
    if replayed.calls.len() != want_calls.len() {
        let _ = writeln!(
            report,
            "{} inbound calls, expected {}",
            replayed.calls.len(),
            want_calls.len()
        );
    }
    let mut used = vec![false; replayed.calls.len()];
    for w in want_calls {
        let who = w["label"].as_str().expect("label").to_string();
        let started = ts_of(&w["started"]).expect("started");
        let near_calls: Vec<usize> = (0..replayed.calls.len())
            .filter(|&i| {
                (kamailio::ts(&replayed.calls[i].started).micros() - started).abs() <= LAG_US
            })
            .collect();
        let [i] = near_calls.as_slice() else {
            let _ = writeln!(
                report,
                "{who}: {} inbound calls started at {}",
                near_calls.len(),
                w["started"]
            );
            continue;
        };
        used[*i] = true;
        let c = &replayed.calls[*i];
        for (field, got) in [
            ("practice", &c.practice),
            ("outcome", &c.outcome),
            ("ended_by", &c.ended_by),
        ] {
            if w[field].as_str() != Some(got.as_str()) {
                let _ = writeln!(report, "{who}: {field} {got}, expected {}", w[field]);
            }
        }
        if c.partial {
            let _ = writeln!(report, "{who}: marked partial");
        }
        if w["abandoned"].as_bool() != Some(c.abandoned) {
            let _ = writeln!(
                report,
                "{who}: abandoned {}, expected {}",
                c.abandoned, w["abandoned"]
            );
        }
        let opt = |s: &Option<String>| s.as_deref().map(|s| kamailio::ts(s).micros());
        d.time(
            &who,
            "started",
            Some(started),
            Some(kamailio::ts(&c.started).micros()),
        );
        d.time(&who, "voicemail", ts_of(&w["voicemail"]), opt(&c.voicemail));
        d.time(
            &who,
            "callback_requested",
            ts_of(&w["callback_requested"]),
            opt(&c.callback_requested),
        );
        d.time(
            &who,
            "callback_made",
            ts_of(&w["callback_made"]),
            opt(&c.callback_made),
        );
        // the expected waits and durations are rounded to the millisecond
        d.span(
            &who,
            "wait",
            us_of(&w["wait_s"]),
            c.wait_s.map(|s| (s * 1e6).round() as i64),
        );
        d.span(
            &who,
            "duration",
            us_of(&w["duration_s"]),
            c.duration_s.map(|s| (s * 1e6).round() as i64),
        );
    }
    for (i, c) in replayed.calls.iter().enumerate() {
        if !used[i] {
            let _ = writeln!(
                report,
                "an inbound call nobody made: {} {} at {}",
                c.practice, c.outcome, c.started
            );
        }
    }

    // the figures, per practice
    let practices = replayed.metrics["practices"].as_array().expect("practices");
    for (name, w) in exp["practices"].as_object().expect("practices") {
        let Some(p) = practices.iter().find(|p| p["practice"] == name.as_str()) else {
            let _ = writeln!(report, "{name}: not in the metrics");
            continue;
        };
        let t = &p["totals"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        if n("CBT001") != n("CBT002") + n("CBT003") + n("CBT004") + n("CBT005") {
            let _ = writeln!(
                report,
                "{name}: CBT001 != CBT002 + CBT003 + CBT004 + CBT005: {t}"
            );
        }
        exact(&mut report, &format!("{name} totals"), &w["totals"], t);
        exact(
            &mut report,
            &format!("{name} by time band"),
            &nonzero(&w["by_time_category"]),
            &nonzero(&p["by_time_category"]),
        );
        exact(
            &mut report,
            &format!("{name} CBT003 by wait"),
            &nonzero(&w["cbt003_by_wait"]),
            &nonzero(&p["cbt003_by_wait"]),
        );
        exact(
            &mut report,
            &format!("{name} CBT007 by duration"),
            &nonzero(&w["cbt007_by_duration"]),
            &nonzero(&p["cbt007_by_duration"]),
        );
        let dpn = &p["dpn"];
        for (field, want) in [
            ("call_volume", &w["totals"]["CBT001"]),
            ("calls_abandoned", &w["abandoned"]),
            ("calls_abandoned_waiting", &w["abandoned_waiting"]),
            ("calls_abandoned_in_ivr", &w["abandoned_in_ivr"]),
            ("missed_calls", &w["totals"]["CBT004"]),
            ("callbacks_requested", &w["totals"]["CBT005"]),
            ("callbacks_made", &w["totals"]["CBT006"]),
            ("answered_calls", &w["totals"]["CBT003"]),
        ] {
            exact(
                &mut report,
                &format!("{name} DPN {field}"),
                want,
                &dpn[field],
            );
        }
        for (field, summary, stat) in [
            ("mean_wait_to_answer_s", "answered_wait_s", "mean"),
            ("median_wait_to_answer_s", "answered_wait_s", "median"),
            ("mean_wait_before_abandonment_s", "abandoned_wait_s", "mean"),
            (
                "median_wait_before_abandonment_s",
                "abandoned_wait_s",
                "median",
            ),
            ("mean_call_length_s", "duration_s", "mean"),
            ("median_call_length_s", "duration_s", "median"),
        ] {
            d.span(
                &format!("{name} DPN {field}"),
                "mean or median",
                us_of(&w[summary][stat]),
                us_of(&dpn[field]),
            );
        }
    }
    d.print();
    let (problems, _) = d.finish();
    report.push_str(&problems);
    eprintln!("{}", replayed.report);
    assert!(
        report.is_empty(),
        "{} does not give the figures of {}:\n{report}",
        pcap.display(),
        exp_path.display()
    );
}
