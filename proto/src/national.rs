//! The practice beside England: NHS England's latest national figures (a
//! small data file with its month and source, replaceable without a new
//! release) and what the site's own set-up does to the comparison.

use crate::period::PeriodFigures;
use crate::site::Site;
use serde::{Deserialize, Serialize};

/// The national figures file (TOML; see `packaging/national.toml`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct National {
    /// The month the figures are of, `YYYY-MM`.
    pub month: String,
    /// Where they come from, for people.
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
    /// Shares of all inbound calls, in percent.
    pub outcomes: NationalOutcomes,
    /// Percent of answered calls answered within 2 minutes.
    #[serde(default)]
    pub answered_within_2_minutes: Option<f64>,
    /// Percent of answered calls by call length, shortest first; the last
    /// band may be open (`up_to_s` left out).
    #[serde(default)]
    pub call_length: Vec<LengthShare>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NationalOutcomes {
    pub answered: f64,
    pub ended_in_ivr: f64,
    pub callback_requested: f64,
    pub missed: f64,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LengthShare {
    /// Upper edge in whole seconds (included), none for the open last band.
    #[serde(default)]
    pub up_to_s: Option<u32>,
    pub percent: f64,
}

impl National {
    /// What is wrong with the figures, if anything (shares out of range or
    /// not adding up to 100, a month that is not `YYYY-MM`).
    pub fn check(&self) -> Result<(), String> {
        let m = self.month.as_bytes();
        let month_ok = m.len() == 7
            && m[4] == b'-'
            && m.iter().enumerate().all(|(i, b)| i == 4 || b.is_ascii_digit())
            && (1..=12).contains(&self.month[5..].parse::<u32>().unwrap_or(0));
        if !month_ok {
            return Err(format!("month `{}` is not YYYY-MM", self.month));
        }
        let o = &self.outcomes;
        let all = [o.answered, o.ended_in_ivr, o.callback_requested, o.missed];
        if all.iter().any(|v| !(0.0..=100.0).contains(v)) {
            return Err("outcome shares must be percentages from 0 to 100".into());
        }
        let sum: f64 = all.iter().sum();
        if (sum - 100.0).abs() > 0.5 {
            return Err(format!("outcome shares add up to {sum:.1}%, not 100%"));
        }
        if let Some(w) = self.answered_within_2_minutes {
            if !(0.0..=100.0).contains(&w) {
                return Err("answered_within_2_minutes must be a percentage".into());
            }
        }
        if !self.call_length.is_empty() {
            let sum: f64 = self.call_length.iter().map(|l| l.percent).sum();
            if (sum - 100.0).abs() > 0.5 {
                return Err(format!("call_length shares add up to {sum:.1}%, not 100%"));
            }
            let edges: Vec<Option<u32>> = self.call_length.iter().map(|l| l.up_to_s).collect();
            let closed: Vec<u32> = edges.iter().flatten().copied().collect();
            if closed.windows(2).any(|w| w[0] >= w[1]) || edges.iter().rev().skip(1).any(|e| e.is_none()) {
                return Err("call_length bands must rise, and only the last may be open".into());
            }
        }
        Ok(())
    }

    /// England's answered share of the calls that did not end in the IVR.
    pub fn answered_past_ivr(&self) -> Option<f64> {
        let rest = 100.0 - self.outcomes.ended_in_ivr;
        (rest > 0.0).then(|| self.outcomes.answered / rest * 100.0)
    }

    pub fn missed_past_ivr(&self) -> Option<f64> {
        let rest = 100.0 - self.outcomes.ended_in_ivr;
        (rest > 0.0).then(|| self.outcomes.missed / rest * 100.0)
    }
}

/// What the site's configuration says about its phone system, as far as
/// it changes the mix of outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Setup {
    /// Automated endpoints (IVR, announcement servers) are configured.
    pub ivr: bool,
    /// A callback service (request destinations or a marking header).
    pub callback_service: bool,
    pub voicemail: bool,
}

impl Setup {
    pub fn of(site: &Site) -> Setup {
        Setup {
            ivr: !site.automated.is_empty(),
            callback_service: !site.callback_request.is_empty() || site.callback_header.is_some(),
            voicemail: !site.voicemail.is_empty(),
        }
    }
}

/// One line of the comparison: percentages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub measure: &'static str,
    pub practice: Option<f64>,
    pub england: Option<f64>,
}

/// The practice beside England, with what its set-up explains.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub month: String,
    pub source: String,
    pub url: Option<String>,
    pub rows: Vec<Row>,
    /// Call length bands: (label, practice %, England %).
    pub call_length: Vec<(String, Option<f64>, f64)>,
    /// Where the mix differs because of how the site is set up.
    pub notes: Vec<String>,
}

fn pct(v: Option<f64>) -> Option<f64> {
    v.map(|x| (x * 1000.0).round() / 10.0)
}

fn length_label(lo: u32, hi: Option<u32>) -> String {
    let m = |s: u32| if (s / 60) * 60 == s { format!("{} min", s / 60) } else { format!("{s} s") };
    match hi {
        Some(h) if lo == 0 => format!("up to {}", m(h)),
        Some(h) => format!("{} to {}", m(lo), m(h)),
        None => format!("over {}", m(lo)),
    }
}

/// The comparison of a practice's period with the national figures.
/// `durations` are the period's answered call lengths (for the call
/// length bands of the national file).
pub fn compare(fig: &PeriodFigures, nat: &National, setup: Setup, durations: &[f64]) -> Comparison {
    let inbound = fig.dpn.call_volume;
    let past_ivr = inbound.saturating_sub(fig.ended_in_ivr);
    let past = |n: u64| (past_ivr > 0).then(|| n as f64 / past_ivr as f64);
    let o = &nat.outcomes;
    let round1 = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
    let rows = vec![
        Row { measure: "Answered", practice: pct(fig.answered_share), england: Some(o.answered) },
        Row { measure: "Ended in IVR", practice: pct(fig.ended_in_ivr_share), england: Some(o.ended_in_ivr) },
        Row { measure: "Callback requested", practice: pct(fig.callback_requested_share), england: Some(o.callback_requested) },
        Row { measure: "Missed", practice: pct(fig.missed_share), england: Some(o.missed) },
        Row { measure: "Answered, of calls past the IVR", practice: pct(past(fig.dpn.answered_calls)), england: round1(nat.answered_past_ivr()) },
        Row { measure: "Missed, of calls past the IVR", practice: pct(past(fig.dpn.missed_calls)), england: round1(nat.missed_past_ivr()) },
        Row { measure: "Answered within 2 minutes, of answered calls", practice: pct(fig.answered_within_2_min_share), england: nat.answered_within_2_minutes },
    ];
    let mut call_length = Vec::new();
    let mut lo = 0u32;
    for band in &nat.call_length {
        let n = durations
            .iter()
            .filter(|d| {
                let s = d.max(0.0).floor() as u64;
                let above = lo == 0 || s > lo as u64;
                above && band.up_to_s.is_none_or(|h| s <= h as u64)
            })
            .count();
        let practice = (!durations.is_empty()).then(|| (n as f64 / durations.len() as f64 * 1000.0).round() / 10.0);
        call_length.push((length_label(lo, band.up_to_s), practice, band.percent));
        lo = band.up_to_s.unwrap_or(lo);
    }
    let mut notes = Vec::new();
    let here = |v: Option<f64>| pct(v).map_or("no calls".to_string(), |p| format!("{p:.1}%"));
    if fig.ended_in_ivr == 0 && !setup.ivr {
        notes.push(format!(
            "No IVR or recorded message is configured here, so no call can end in one (England: {:.1}% of calls end there). \
             Your answered and missed shares are therefore shares of every call; compare the \"of calls past the IVR\" rows.",
            o.ended_in_ivr
        ));
    } else {
        notes.push(format!(
            "Calls here meet an automated message or menu (an IVR) first: callers who hang up there or are sent elsewhere count as \
             ended in IVR ({} here, {:.1}% in England). Where the IVR always answers first, everyone who hangs up during the welcome \
             message is counted there too, so the \"of calls past the IVR\" rows compare like with like.",
            here(fig.ended_in_ivr_share),
            o.ended_in_ivr
        ));
    }
    if setup.callback_service {
        notes.push(format!(
            "Callers can ask for a callback here: NHS England counts those calls as callback requested ({} here, {:.1}% in England), \
             not as answered, so a queue that offers callbacks shows fewer answered calls than the people it helped.",
            here(fig.callback_requested_share),
            o.callback_requested
        ));
    } else {
        notes.push(format!(
            "No callback service is configured, so no call can be counted as callback requested (England: {:.1}%): callers who \
             would have asked for one wait or hang up, and count as answered or missed.",
            o.callback_requested
        ));
    }
    if setup.voicemail {
        notes.push("Calls that reach voicemail count as missed, as NHS England counts them.".to_string());
    }
    Comparison {
        month: nat.month.clone(),
        source: nat.source.clone(),
        url: nat.url.clone(),
        rows,
        call_length,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat() -> National {
        National {
            month: "2026-08".into(),
            source: "test".into(),
            url: None,
            outcomes: NationalOutcomes {
                answered: 57.7,
                ended_in_ivr: 25.3,
                callback_requested: 6.6,
                missed: 10.4,
            },
            answered_within_2_minutes: Some(61.6),
            call_length: vec![],
        }
    }

    #[test]
    fn checks() {
        assert!(nat().check().is_ok());
        let mut n = nat();
        n.outcomes.missed = 20.0;
        assert!(n.check().unwrap_err().contains("add up"));
        let mut n = nat();
        n.month = "2026-13".into();
        assert!(n.check().is_err());
        let mut n = nat();
        n.call_length = vec![
            LengthShare { up_to_s: Some(60), percent: 30.0 },
            LengthShare { up_to_s: None, percent: 70.0 },
        ];
        assert!(n.check().is_ok());
        n.call_length.swap(0, 1);
        assert!(n.check().is_err());
        assert!((nat().answered_past_ivr().unwrap() - 77.24).abs() < 0.01);
    }

    fn figures(outcomes: &[crate::call::Outcome]) -> (PeriodFigures, Site) {
        use crate::call::{CallRecord, Correlation, EndedBy, Outcome};
        let site = Site::single("B82005", &["01632 960123"], &crate::number::Hasher::new([1; 32], "44"));
        let mut agg = crate::metrics::Aggregator::new(&site);
        let t = crate::time::Timestamp(1_762_243_200_000_000); // 2025-11-04T08:00Z
        for (i, o) in outcomes.iter().enumerate() {
            agg.add_call(&CallRecord {
                seq: i as u64,
                call_id: String::new(),
                practice: "B82005".into(),
                started: t,
                queue_joined: None,
                first_ring: None,
                answered: None,
                ended: t,
                ended_by: EndedBy::Caller,
                outcome: *o,
                wait_s: (*o == Outcome::Answered || *o == Outcome::Missed).then_some(30.0 + 100.0 * i as f64),
                duration_s: (*o == Outcome::Answered).then_some(100.0),
                abandoned: *o == Outcome::Missed,
                voicemail: None,
                callback_requested: None,
                callback_made: None,
                offered_to_staff: true,
                legs: 1,
                correlation: Correlation::default(),
                partial: false,
                caller: None,
            });
        }
        let d = chrono::NaiveDate::from_ymd_opt(2025, 11, 4).unwrap();
        (crate::period::period(&agg, "B82005", d, d), site)
    }

    #[test]
    fn comparison_and_set_up_notes() {
        use crate::call::Outcome::*;
        let (f, mut site) = figures(&[Answered, Answered, Answered, Missed]);
        assert_eq!(f.dpn.call_volume, 4);
        let c = compare(&f, &nat(), Setup::of(&site), &[100.0, 100.0, 100.0]);
        let row = |m: &str| c.rows.iter().find(|r| r.measure == m).unwrap().clone();
        assert_eq!(row("Answered").practice, Some(75.0));
        assert_eq!(row("Answered, of calls past the IVR").practice, Some(75.0));
        assert_eq!(row("Answered, of calls past the IVR").england, Some(77.2));
        // waits 30, 130, 230 s: one within 2 minutes
        assert_eq!(row("Answered within 2 minutes, of answered calls").practice, Some(33.3));
        assert!(c.notes[0].starts_with("No IVR"), "{:?}", c.notes);
        assert!(c.notes[1].starts_with("No callback service"), "{:?}", c.notes);
        // an IVR answering first and a callback line, as configured
        let h = crate::number::Hasher::new([1; 32], "44");
        site.automated.push(crate::site::Endpoint::parse("ivr", &h));
        site.callback_request.push(crate::site::Endpoint::parse("callback", &h));
        let (f, _) = figures(&[Answered, EndedInIvr, CallbackRequested, Missed]);
        let c = compare(&f, &nat(), Setup::of(&site), &[100.0]);
        assert!(c.notes[0].contains("ended in IVR (25.0% here, 25.3% in England)"), "{:?}", c.notes);
        assert!(c.notes[1].contains("callback requested (25.0% here, 6.6% in England)"), "{:?}", c.notes);
        assert_eq!(row("Answered").england, Some(57.7));
    }

    #[test]
    fn labels() {
        assert_eq!(length_label(0, Some(60)), "up to 1 min");
        assert_eq!(length_label(60, Some(90)), "1 min to 90 s");
        assert_eq!(length_label(300, None), "over 5 min");
    }
}
