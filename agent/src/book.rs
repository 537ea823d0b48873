//! Finished calls as the outputs need them: call events folded into records
//! (a callback made updates the call that asked for it), and the aggregate.

use cbt_proto::call::{CallEvent, CallRecord};
use cbt_proto::metrics::Aggregator;
use cbt_proto::site::Site;
use cbt_proto::Timestamp;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct CallBook {
    records: BTreeMap<u64, CallRecord>,
    callbacks: Vec<(String, Timestamp)>,
}

impl CallBook {
    pub fn apply(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::Finished(r) => {
                self.records.insert(r.seq, *r);
            }
            CallEvent::CallbackMade { seq, practice, at, .. } => {
                if let Some(r) = self.records.get_mut(&seq) {
                    r.callback_made = Some(at);
                }
                self.callbacks.push((practice, at));
            }
        }
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
        }
        for (p, at) in &self.callbacks {
            agg.add_callback(p, *at);
        }
        agg
    }
}
