//! Live: a real Kamailio as the phone system of two GP practices, sipp as
//! the carrier's callers, the handsets and the automated endpoints, all on
//! loopback; the capture replayed by `cbt-agent replay`; every inbound call
//! checked against what sipp did.
//!
//! Kamailio (`tests/kamailio/kamailio.cfg`, on 127.0.0.10) routes by the
//! dialled number: practice A's reception rings two handsets at once, then
//! voicemail after 2.5 s (same Call-ID, serial forking); practice B's
//! number rings its handset; the IVR and callback numbers go to their
//! servers; a number nobody listed rings practice A's reception. Handsets
//! dial extensions (internal calls) and numbers (out through the carrier),
//! one of them calling back a caller who asked for it. The plan of
//! [`calls_through_kamailio_come_out_as_sipp_made_them`] has one call of
//! each kind, several at once (about 7 s); [`welcome_message_then_ring_group`]
//! has calls that hear a welcome message as early media before the
//! handsets ring (about 5 s). sipp's scenarios are `tests/sipp/pbx-uac.xml`
//! and `pbx-uas.xml`; each call tells every endpoint what to do in a
//! header, so one scenario plays them all.
//!
//! What each call should come out as is derived from sipp's logs alone
//! (`cbt_tests::kamailio::observe`, the rules of the requirements applied
//! to what each endpoint sent and received, with sipp's timestamps), never
//! from cbt-agent. Then cbt-agent's view (`--output calls`, `metrics`,
//! `report`, `--nhs-csv`, through the library entry point of the command)
//! must have exactly one inbound call per caller INVITE, with the practice,
//! outcome, abandoned flag, wait, duration, voicemail and callback times
//! sipp saw, and nothing for outbound and internal calls; per practice the
//! indicators must add up (CBT001 = CBT002 + CBT003 + CBT004 + CBT005) and
//! equal the counts sipp saw; the three CSV files must have their exact
//! headers and agree with the indicators. Times, waits and durations are
//! compared within the bounds measured and explained at
//! `cbt_tests::kamailio::LAG_US` (the lag of a sipp log line behind its
//! packet): each time at or before the log line, by 20 ms at most; the
//! median within 1 ms.
//!
//! Needs sipp, dumpcap or tcpdump, kamailio and the right to capture on
//! `lo`. Without them: `SKIP: ...`, except under CI where it fails. The work
//! directory (sipp's and kamailio's logs, the capture, the site file and
//! cbt-agent's outputs) is kept in `target/tmp/kamailio_e2e/<test>`.

use cbt_proto::call::Outcome;
use cbt_proto::Timestamp;
use cbt_tests::in_ci;
use cbt_tests::kamailio::{
    self, answer, inbound, plan, Act, CallOut, Differences, Intent, Observed, PlannedCall, Reply, Topology, A_WELCOME,
    CALLER, LAG_US, NOANSWER_MS,
};
use cbt_tests::sipp::CaptureError;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

const TEST: &str = "kamailio_e2e";

fn work_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(TEST)
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn t_us(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.micros())
}

fn opt_ts(s: &Option<String>) -> Option<i64> {
    s.as_deref().map(|s| kamailio::ts(s).micros())
}

fn secs_us(s: Option<f64>) -> Option<i64> {
    s.map(|s| (s * 1e6).round() as i64)
}

/// Pairs every observed call with the one call cbt-agent started within
/// [`LAG_US`] of the caller's INVITE; reports calls with none or
/// several, and calls of cbt-agent's no inbound call explains.
fn pair<'a>(
    report: &mut String,
    observed: &'a [Observed],
    calls: &'a [CallOut],
) -> Vec<(&'a Observed, &'a CallOut)> {
    let mut used = vec![false; calls.len()];
    let mut pairs = Vec::new();
    for o in observed {
        let near: Vec<usize> = (0..calls.len())
            .filter(|&i| {
                (o.started.micros() - kamailio::ts(&calls[i].started).micros()).abs() <= LAG_US
            })
            .collect();
        match near.as_slice() {
            [i] => {
                used[*i] = true;
                pairs.push((o, &calls[*i]));
            }
            [] => {
                let _ = writeln!(
                    report,
                    "{} ({}): no inbound call started at the caller's INVITE ({})",
                    o.label, o.call_id, o.started
                );
            }
            _ => {
                let _ = writeln!(
                    report,
                    "{} ({}): {} inbound calls started at the caller's INVITE",
                    o.label,
                    o.call_id,
                    near.len()
                );
            }
        }
    }
    for (i, c) in calls.iter().enumerate() {
        if !used[i] {
            let _ = writeln!(
                report,
                "an inbound call no caller made: {} {} started {} (outbound or internal calls must not count)",
                c.practice, c.outcome, c.started
            );
        }
    }
    pairs
}

/// The per-practice counts sipp's logs give: CBT001-CBT007, and the
/// abandoned calls.
fn expected_counts(observed: &[Observed]) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for o in observed {
        let p = out.entry(o.practice.clone()).or_default();
        for k in [
            "CBT001",
            "CBT002",
            "CBT003",
            "CBT004",
            "CBT005",
            "CBT006",
            "CBT007",
            "abandoned",
        ] {
            p.entry(k).or_default();
        }
        *p.get_mut("CBT001").unwrap() += 1;
        let code = match o.outcome {
            Outcome::EndedInIvr => "CBT002",
            Outcome::Answered => "CBT003",
            Outcome::Missed => "CBT004",
            Outcome::CallbackRequested => "CBT005",
        };
        *p.get_mut(code).unwrap() += 1;
        if o.outcome == Outcome::Answered {
            *p.get_mut("CBT007").unwrap() += 1;
        }
        if o.callback_made.is_some() {
            *p.get_mut("CBT006").unwrap() += 1;
        }
        if o.abandoned {
            *p.get_mut("abandoned").unwrap() += 1;
        }
    }
    out
}

/// The tests of this file one at a time: each runs a Kamailio and a dozen
/// sipp processes, and their timing is what is measured.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Plays `calls` through Kamailio, replays the capture with cbt-agent and
/// checks everything described at the top of this file; panics with every
/// difference found.
fn play_and_check(test: &str, calls: &[PlannedCall]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some((tools, kamailio_bin)) = kamailio::tools_or_skip(test) else {
        return;
    };
    let started = Instant::now();
    let dir = work_dir(test);
    let topo = Topology::pick();
    let run = match kamailio::run(
        &tools,
        &kamailio_bin,
        &topo,
        calls,
        NOANSWER_MS,
        &dir.join("run"),
    ) {
        Ok(r) => r,
        Err(CaptureError::Permission(m)) if !in_ci() => {
            eprintln!("SKIP: {test}: cannot capture on lo: {m} (run as root, or give dumpcap its capabilities)");
            return;
        }
        Err(e) => panic!("{test}: {e}\n(work directory: {})", dir.display()),
    };
    let played = started.elapsed();
    let here = format!(
        "(capture by {}; it, the logs and cbt-agent's outputs are in {})",
        tools.capture.name(),
        dir.display()
    );
    let (observed, deviations) =
        kamailio::observe(calls, &run.events).unwrap_or_else(|e| panic!("sipp's logs: {e} {here}"));
    assert!(
        deviations.is_empty(),
        "the calls did not go as planned {here}:\n{}",
        deviations.join("\n")
    );
    let inbound = calls.iter().filter(|c| c.from == CALLER).count();
    assert_eq!(observed.len(), inbound, "{here}");

    let site = dir.join("site.toml");
    std::fs::write(&site, kamailio::site_toml()).expect("site file");
    let replayed = kamailio::replay(&site, std::slice::from_ref(&run.pcap), &dir);
    std::fs::write(
        dir.join("calls.jsonl"),
        replayed
            .calls
            .iter()
            .map(|c| format!("{c:?}\n"))
            .collect::<String>(),
    )
    .ok();
    std::fs::write(dir.join("report.txt"), &replayed.report).ok();

    // every call, field by field
    let mut report = String::new();
    let mut d = Differences::default();
    if replayed.calls.len() != inbound {
        let _ = writeln!(
            report,
            "{} inbound calls, but the callers made {inbound}",
            replayed.calls.len()
        );
    }
    for (o, c) in pair(&mut report, &observed, &replayed.calls) {
        let who = format!("{} ({})", o.label, o.call_id);
        if c.practice != o.practice {
            let _ = writeln!(
                report,
                "{who}: practice {}, expected {}",
                c.practice, o.practice
            );
        }
        if c.outcome != o.outcome.name() {
            let _ = writeln!(
                report,
                "{who}: outcome {}, expected {}",
                c.outcome,
                o.outcome.name()
            );
        }
        if c.abandoned != o.abandoned {
            let _ = writeln!(
                report,
                "{who}: abandoned {}, expected {}",
                c.abandoned, o.abandoned
            );
        }
        let by = if o.ended_by_caller {
            "caller"
        } else {
            "practice"
        };
        if c.ended_by != by {
            let _ = writeln!(report, "{who}: ended_by {}, expected {by}", c.ended_by);
        }
        if c.legs != o.legs {
            let _ = writeln!(
                report,
                "{who}: {} legs, but the caller and {} endpoints got the INVITE",
                c.legs,
                o.legs - 1
            );
        }
        if c.partial {
            let _ = writeln!(report, "{who}: marked partial");
        }
        if c.offered_to_staff != o.queue_joined.is_some() {
            let _ = writeln!(
                report,
                "{who}: offered_to_staff {}, but a handset got the INVITE: {}",
                c.offered_to_staff,
                o.queue_joined.is_some()
            );
        }
        d.time(
            &who,
            "started",
            Some(o.started.micros()),
            Some(kamailio::ts(&c.started).micros()),
        );
        d.time(
            &who,
            "queue_joined",
            t_us(o.queue_joined),
            opt_ts(&c.queue_joined),
        );
        d.time(
            &who,
            "first_ring",
            t_us(o.first_ring),
            opt_ts(&c.first_ring),
        );
        d.time(&who, "answered", t_us(o.answered), opt_ts(&c.answered));
        d.time(
            &who,
            "ended",
            Some(o.ended.micros()),
            Some(kamailio::ts(&c.ended).micros()),
        );
        d.time(&who, "voicemail", t_us(o.voicemail), opt_ts(&c.voicemail));
        d.time(
            &who,
            "callback_requested",
            t_us(o.callback_requested),
            opt_ts(&c.callback_requested),
        );
        d.time(
            &who,
            "callback_made",
            t_us(o.callback_made),
            opt_ts(&c.callback_made),
        );
        d.span(&who, "wait", o.wait_us, secs_us(c.wait_s));
        d.span(&who, "duration", o.duration_us, secs_us(c.duration_s));
    }
    d.print();
    let (problems, _) = d.finish();
    report.push_str(&problems);

    // the indicators, per practice
    let want = expected_counts(&observed);
    let practices = replayed.metrics["practices"].as_array().expect("practices");
    let mut seen = Vec::new();
    for p in practices {
        let name = p["practice"].as_str().expect("practice").to_string();
        let totals = &p["totals"];
        let n = |k: &str| {
            totals[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: no {k} in {totals}"))
        };
        if n("CBT001") != n("CBT002") + n("CBT003") + n("CBT004") + n("CBT005") {
            let _ = writeln!(
                report,
                "{name}: CBT001 {} != CBT002 + CBT003 + CBT004 + CBT005 ({totals})",
                n("CBT001")
            );
        }
        if n("CBT007") != n("CBT003") {
            let _ = writeln!(
                report,
                "{name}: CBT007 {} != CBT003 {}",
                n("CBT007"),
                n("CBT003")
            );
        }
        let empty = BTreeMap::new();
        let w = want.get(&name).unwrap_or(&empty);
        for code in [
            "CBT001", "CBT002", "CBT003", "CBT004", "CBT005", "CBT006", "CBT007",
        ] {
            let e = w.get(code).copied().unwrap_or(0);
            if n(code) != e {
                let _ = writeln!(
                    report,
                    "{name}: {code} is {}, sipp's logs give {e}",
                    n(code)
                );
            }
        }
        let abandoned = p["dpn"]["calls_abandoned"]
            .as_u64()
            .expect("calls_abandoned");
        let e = w.get("abandoned").copied().unwrap_or(0);
        if abandoned != e {
            let _ = writeln!(
                report,
                "{name}: {abandoned} calls abandoned, sipp's logs give {e}"
            );
        }
        seen.push(name);
    }
    for p in want.keys() {
        if !seen.iter().any(|s| s == p) {
            let _ = writeln!(report, "no figures for {p} in the metrics");
        }
    }

    // the NHS CSV files: exact headers; the day's CBT001 and CBT003 rows
    // add up to the indicators
    match kamailio::read_nhs_csv(&replayed.csv_dir) {
        Err(e) => {
            let _ = writeln!(report, "--nhs-csv: {e}");
        }
        Ok(files) => {
            let mut sums: BTreeMap<(String, String), u64> = BTreeMap::new();
            for row in &files["by_day_and_time.csv"] {
                *sums.entry((row[1].clone(), row[2].clone())).or_default() +=
                    row[4].parse::<u64>().expect("value");
            }
            for row in &files["calls_answered_metric.csv"] {
                if row[3] == "TOTAL" {
                    *sums
                        .entry((row[1].clone(), "CBT003 TOTAL".into()))
                        .or_default() += row[5].parse::<u64>().expect("value");
                }
            }
            for (p, w) in &want {
                for (key, code) in [
                    ("CBT001", "CBT001"),
                    ("CBT004", "CBT004"),
                    ("CBT003 TOTAL", "CBT003"),
                ] {
                    let got = sums
                        .get(&(p.clone(), key.to_string()))
                        .copied()
                        .unwrap_or(0);
                    if got != w[code] {
                        let _ = writeln!(
                            report,
                            "--nhs-csv: {p} {key} adds up to {got}, expected {}",
                            w[code]
                        );
                    }
                }
            }
        }
    }
    eprintln!("{}", replayed.report);
    eprintln!(
        "{} calls placed ({inbound} inbound) through kamailio in {:.1} s; test {:.1} s {here}",
        calls.len(),
        played.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.is_empty(),
        "cbt-agent's calls do not match what sipp did {here}:\n{report}"
    );
}

#[test]
fn calls_through_kamailio_come_out_as_sipp_made_them() {
    play_and_check("calls", &plan());
}

/// Practice A's second line plays a welcome message first, as early media
/// (the IVR server answers 183 with SDP, and ends its branch with 480 a
/// second later), then rings the reception's handsets. The caller hears
/// the message and the ringing without the call ever being answered.
///
/// The requirements: "A call that was never answered by anything
/// (rejected, cancelled while the line rang) waits from `started` to its
/// end." So the caller who gives up 1.5 s into the ringing waited about
/// 2.5 s, the message included; the caller whose call a handset answers
/// waited from when the handsets started ringing (queue_joined).
#[test]
fn welcome_message_then_ring_group() {
    use Outcome::*;
    use Reply::*;
    // the caller gives up 1.5 s after the last 180 or 183: after the
    // handsets' 180s, which come once the welcome is over
    let welcome = || ("ivr", Early { after_ms: 1000 });
    let call =
        |n: u32, label: &str, act: Act, replies: Vec<(&'static str, Reply)>, intent: Intent| {
            PlannedCall {
                label: label.into(),
                from: CALLER.into(),
                caller: format!("+4477009002{n:02}"),
                dialled: A_WELCOME.into(),
                at_ms: 300 * n,
                act,
                replies,
                intent,
            }
        };
    play_and_check(
        "welcome",
        &[
            call(
                0,
                "welcome-then-abandoned",
                Act::Cancel { ms: 1500 },
                vec![welcome(), ("h1", Ring), ("h2", Ring)],
                inbound(Missed, true),
            ),
            call(
                1,
                "welcome-then-answered",
                Act::Talk { ms: 1000 },
                vec![welcome(), ("h1", answer(1000)), ("h2", Ring)],
                inbound(Answered, false),
            ),
            call(
                2,
                "welcome-then-busy",
                Act::Busy,
                vec![
                    welcome(),
                    ("h1", Busy { after_ms: 300 }),
                    ("h2", Busy { after_ms: 400 }),
                ],
                inbound(Missed, false),
            ),
        ],
    );
}
