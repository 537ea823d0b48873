//! Day documents for the supplier's collector.
//!
//! [`Scheduler`] (run by the daemon's engine thread about once a minute)
//! decides what to send: today's figures every `upload.interval`, each day
//! as final once it closes (local midnight plus `correlation.settle`), and a
//! higher revision of a closed day when a late call or a restored gap
//! changes it. Documents are made from the store ([`documents_for`]) and
//! offered to its outbox, which gives a new revision only when the content
//! changed. [`deliver`] sends the outbox over HTTPS.

pub mod deliver;

use crate::config::UploadConfig;
use crate::store::{Gap, Store};
use anyhow::Result;
use cbt_proto::metrics::{Aggregator, Day};
use cbt_proto::site::{OrgCodes, Site};
use cbt_proto::time::{Micros, SECOND};
use cbt_proto::upload::{AgentInfo, DayDocument, GapDoc, Quality};
use cbt_proto::Timestamp;
use chrono::{Duration, NaiveDate, NaiveTime, TimeZone, Timelike};

/// The UTC span of a local date.
fn day_span(site: &Site, date: NaiveDate) -> (Timestamp, Timestamp) {
    let at = |d: NaiveDate| {
        site.timezone
            .from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map_or(Timestamp(0), |t| Timestamp(t.timestamp_micros()))
    };
    (at(date), at(date + Duration::days(1)))
}

fn local_hour(site: &Site, t: Timestamp) -> Option<(NaiveDate, u32)> {
    let d = t.to_datetime()?.with_timezone(&site.timezone).naive_local();
    Some((d.date(), d.hour()))
}

/// The date's data quality from the store's activity record and gaps.
pub fn quality(store: &Store, site: &Site, date: NaiveDate, now: Timestamp) -> Result<Quality> {
    let (from, to) = day_span(site, date);
    let mut q = Quality::default();
    let gaps: Vec<Gap> = store.gaps()?;
    for g in gaps.iter().filter(|g| g.to > from && g.from < to) {
        let minutes = g.to.min(to).since(g.from.max(from)) as f64 / 60e6;
        q.gap_minutes += minutes;
        q.capture_gaps.push(GapDoc {
            from: g.from.to_rfc3339(),
            to: g.to.to_rfc3339(),
            minutes: (minutes * 1000.0).round() / 1000.0,
            reason: g.reason.clone(),
        });
    }
    q.gap_minutes = (q.gap_minutes * 1000.0).round() / 1000.0;
    if let Some(a) = store.activity_on(date)? {
        q.activity_recorded = true;
        // hours not over yet say nothing
        let (today, hour_now) = local_hour(site, now).unwrap_or((date, 24));
        let last = if date < today { 24 } else if date == today { hour_now } else { 0 };
        for (h, x) in a.hours.iter().enumerate() {
            if (h as u32) < last && x.up_s == 0 {
                q.hours_without_capture.push(h as u8);
            }
            if x.partial_view_s > 0 {
                q.partial_view_hours.push(h as u8);
            }
            q.sip_messages += x.messages;
            q.parse_errors += x.parse_errors;
            q.packets_dropped += x.dropped;
            q.b2bua_ambiguous += x.b2bua_ambiguous;
        }
    }
    q.parse_error_share = if q.sip_messages == 0 {
        0.0
    } else {
        ((q.parse_errors as f64 / q.sip_messages as f64).min(1.0) * 1e6).round() / 1e6
    };
    Ok(q)
}

/// The documents of one local date, one per practice: from the kept day
/// figures when the date is closed, else from its calls as they are now.
/// `revision`, `final` and `generated_at` are left for the caller.
pub fn documents_for(store: &Store, site: &Site, agent_id: &str, date: NaiveDate, now: Timestamp) -> Result<Vec<DayDocument>> {
    let agg = Aggregator::new(site);
    let closed = store.closed_through()?.is_some_and(|c| date <= c);
    let days: Vec<(String, Day)> = if closed {
        store.days_on(date)?
    } else {
        let live = store.figures_on(site, date)?;
        let empty = Day::new(live.wait_buckets(), live.duration_buckets());
        live.practice_list()
            .into_iter()
            .map(|(p, _)| {
                let d = live.days().get(&(p.clone(), date)).cloned().unwrap_or_else(|| empty.clone());
                (p, d)
            })
            .collect()
    };
    let q = quality(store, site, date, now)?;
    let agent = AgentInfo {
        id: agent_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(days
        .into_iter()
        .map(|(practice, day)| {
            let codes = site.practices.iter().find(|p| p.ods == practice).map(|p| p.codes.clone()).unwrap_or_else(OrgCodes::default);
            DayDocument::new(
                agent.clone(),
                &practice,
                &codes,
                date,
                site.timezone.name(),
                agg.wait_buckets(),
                agg.duration_buckets(),
                &day,
                q.clone(),
            )
        })
        .collect())
}

/// Documents for `from..=to` as they stand (for `export` and `upload
/// --dry-run`): final for closed dates, numbered after what was offered.
pub fn documents_between(store: &Store, site: &Site, agent_id: &str, from: NaiveDate, to: NaiveDate, now: Timestamp) -> Result<Vec<DayDocument>> {
    let states: std::collections::BTreeMap<(String, NaiveDate), u64> =
        store.upload_states_between(Some(from), Some(to))?.into_iter().map(|(k, s)| (k, s.revision)).collect();
    let closed = store.closed_through()?;
    let mut out = Vec::new();
    let mut date = from;
    while date <= to {
        let active = store.activity_on(date)?.is_some() || !store.days_on(date)?.is_empty() || store.any_call_on(site, date)?;
        if active {
            for mut d in documents_for(store, site, agent_id, date, now)? {
                d.revision = states.get(&(d.practice.clone(), date)).copied().unwrap_or(0).max(1);
                d.is_final = closed.is_some_and(|c| date <= c);
                d.generated_at = now.to_rfc3339();
                out.push(d);
            }
        }
        date += Duration::days(1);
    }
    Ok(out)
}

/// The name this agent gives the collector: `upload.agent_id`, else the host name.
pub fn agent_id(cfg: Option<&UploadConfig>) -> String {
    match cfg {
        Some(c) => c.agent_id.clone(),
        None => hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "cbt-agent".into()),
    }
}

/// Offers a date's documents to the outbox; returns how many got a new revision.
pub fn offer(store: &Store, site: &Site, agent_id: &str, date: NaiveDate, is_final: bool, now: Timestamp) -> Result<usize> {
    let mut n = 0;
    for doc in documents_for(store, site, agent_id, date, now)? {
        let content = blake3::hash(&doc.content_key()).to_hex().to_string();
        let made = store.offer_document(&doc.practice, date, &content, is_final, now, |revision| {
            let mut d = doc.clone();
            d.revision = revision;
            d.is_final = is_final;
            d.generated_at = now.to_rfc3339();
            serde_json::to_string(&d).expect("a document serialises")
        })?;
        n += made.is_some() as usize;
    }
    Ok(n)
}

/// When to make which documents.
pub struct Scheduler {
    agent_id: String,
    interval: Micros,
    last_live: Option<Timestamp>,
    backlog_checked: bool,
}

/// What one run of the scheduler did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered {
    pub closed_days: usize,
    pub documents: usize,
}

impl Scheduler {
    pub fn new(cfg: &UploadConfig) -> Scheduler {
        Scheduler {
            agent_id: cfg.agent_id.clone(),
            interval: cfg.interval,
            last_live: None,
            backlog_checked: false,
        }
    }

    /// After a configuration reload: the new interval and name apply, and
    /// today's documents go out at the next run.
    pub fn reconfigure(&mut self, cfg: &UploadConfig) {
        self.agent_id = cfg.agent_id.clone();
        self.interval = cfg.interval;
        self.last_live = None;
    }

    /// Closes the days that are over, and offers: final documents of days
    /// just closed, of dirty closed days (recomputed), and of closed days
    /// never offered as final (a store from before upload was set up);
    /// documents of the open days every `interval`.
    pub fn run(&mut self, store: &Store, site: &Site, now: Timestamp) -> Result<Offered> {
        let mut out = Offered::default();
        let settled = now.add(-site.settle.max(0));
        let today = Aggregator::new(site).local_date(settled);
        let closed = store.close_days(site, today)?;
        out.closed_days = closed.len();
        for date in closed {
            out.documents += offer(store, site, &self.agent_id, date, true, now)?;
        }
        for date in store.dirty_days()? {
            store.recompute_day(site, date)?;
            out.documents += offer(store, site, &self.agent_id, date, true, now)?;
        }
        if !self.backlog_checked {
            self.backlog_checked = true;
            let final_offered: std::collections::BTreeSet<(String, NaiveDate)> =
                store.upload_states()?.into_iter().filter(|(_, s)| s.is_final).map(|(k, _)| k).collect();
            let dates: std::collections::BTreeSet<NaiveDate> =
                store.days()?.into_iter().filter(|(k, _)| !final_offered.contains(k)).map(|((_, d), _)| d).collect();
            for date in dates {
                out.documents += offer(store, site, &self.agent_id, date, true, now)?;
            }
        }
        if self.last_live.is_none_or(|t| now.since(t) >= self.interval || now < t) {
            self.last_live = Some(now);
            let first_open = store.closed_through()?.map_or(today, |c| c + Duration::days(1));
            let now_date = Aggregator::new(site).local_date(now);
            let mut date = first_open.max(now_date - Duration::days(1));
            while date <= now_date {
                out.documents += offer(store, site, &self.agent_id, date, false, now)?;
                date += Duration::days(1);
            }
        }
        Ok(out)
    }
}

/// How long a retry waits after `attempts` failures: doubling from 2 s,
/// at most `max`, with jitter (a random point in its upper half) so many
/// agents do not come back at once.
pub fn backoff(attempts: u32, max: Micros, jitter: f64) -> Micros {
    let base = (2 * SECOND).saturating_mul(1i64 << attempts.saturating_sub(1).min(30)).min(max.max(SECOND));
    (base as f64 * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))) as Micros
}

#[cfg(test)]
mod tests;
