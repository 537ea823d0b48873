//! Finished calls as the outputs need them, whether they come from a replay
//! (call events) or from the daemon's store (records): the records, in start
//! order, and their aggregate. Shared by `replay` and `report` so both print
//! exactly the same things for the same calls.

use crate::output;
use anyhow::{Context, Result};
use cbt_proto::call::{CallEvent, CallRecord};
use cbt_proto::metrics::{Aggregator, Day};
use cbt_proto::site::Site;
use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Default)]
pub struct CallBook {
    records: BTreeMap<u64, CallRecord>,
    /// Day figures kept without their calls (pruned by retention).
    extra_days: Vec<((String, NaiveDate), Day)>,
}

/// What to print about calls.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CallsOutput {
    Calls,
    Metrics,
    Report,
    Nothing,
}

impl CallBook {
    pub fn apply(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::Finished(r) => {
                self.records.insert(r.seq, *r);
            }
            CallEvent::CallbackMade { seq, at, .. } => {
                if let Some(r) = self.records.get_mut(&seq) {
                    r.callback_made = Some(at);
                }
            }
        }
    }

    pub fn from_records(records: Vec<CallRecord>) -> CallBook {
        CallBook {
            records: records.into_iter().map(|r| (r.seq, r)).collect(),
            extra_days: Vec::new(),
        }
    }

    /// Adds day figures for dates whose calls are no longer kept.
    pub fn add_days(&mut self, days: Vec<((String, NaiveDate), Day)>) {
        self.extra_days.extend(days);
    }

    /// Calls in order of their start.
    pub fn records(&self) -> Vec<&CallRecord> {
        let mut v: Vec<&CallRecord> = self.records.values().collect();
        v.sort_by_key(|r| (r.started, r.seq));
        v
    }

    pub fn aggregate(&self, site: &Site) -> Aggregator {
        let mut agg = Aggregator::new(site);
        for r in self.records() {
            agg.add_call(r);
            if let Some(at) = r.callback_made {
                agg.add_callback(&r.practice, at);
            }
        }
        for ((p, d), day) in &self.extra_days {
            agg.add_day(p, *d, day);
        }
        agg
    }

    /// Prints calls, metrics or the report, and writes the NHS CSV files.
    pub fn emit(
        &self,
        site: &Site,
        what: CallsOutput,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        nhs_csv: Option<&Path>,
        unassigned: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<()> {
        let agg = self.aggregate(site);
        match what {
            CallsOutput::Calls => {
                for r in self.records() {
                    let d = agg.local_date(r.started);
                    if from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t) {
                        writeln!(out, "{}", output::call_json(r))?;
                    }
                }
            }
            CallsOutput::Metrics => writeln!(out, "{}", serde_json::to_string_pretty(&agg.report(from, to))?)?,
            CallsOutput::Report => output::write_report(out, &agg.report(from, to))?,
            CallsOutput::Nothing => {}
        }
        if let Some(dir) = nhs_csv {
            let span = agg.span();
            match (from.or(span.map(|s| s.0)), to.or(span.map(|s| s.1))) {
                (Some(f), Some(t)) => output::write_nhs_csv(dir, agg.figures(), unassigned, f, t).with_context(|| format!("cannot write the CSV files into {}", dir.display()))?,
                _ => writeln!(err, "cbt-agent: no calls found, so no CSV files written (give --from and --to to write zero rows)")?,
            }
        }
        Ok(())
    }
}
