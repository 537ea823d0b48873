//! The engine's byte accounting against the heap it really uses: a
//! counting allocator measures live heap bytes while floods fill the
//! engine to its ceiling.

use cbt_proto::guard::GuardConfig;
use cbt_proto::number::Hasher;
use cbt_proto::site::{AddrMatch, Site};
use cbt_proto::synth::{frames, Probe};
use cbt_proto::{Engine, EngineConfig, LegConfig, LinkType, Timestamp};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Feeds `n` INVITEs nothing answers (2,000/s) from one scanner to a
/// handset; returns the worst and best ratio of live heap to counted
/// bytes, sampled every 1,000 INVITEs once the state is sizeable.
fn flood(carrier: bool, limit: usize, n: u64) -> (f64, f64, Engine) {
    let h = Hasher::new([1; 32], "44");
    let mut site = Site::single("B82005", &["01632 960123"], &h);
    site.staff = vec![AddrMatch::parse("10.20.1.0/24").unwrap()];
    if carrier {
        site.carrier = vec![AddrMatch::parse("192.0.2.0/24").unwrap()];
    }
    let base = live();
    let mut e = Engine::new(EngineConfig {
        hash_key: [1; 32],
        site: Some(site),
        emit_legs: false,
        journal: true,
        legs: LegConfig { adopt_orphans: true, ..LegConfig::default() },
        guard: GuardConfig { memory_limit: limit, ..GuardConfig::default() },
        ..EngineConfig::default()
    });
    let t0 = Timestamp::from_secs_micros(1_730_710_800, 0);
    let (mut worst, mut best): (f64, f64) = (0.0, f64::MAX);
    for i in 0..n {
        let ts = t0.add(i as i64 * 500);
        let mut p = Probe::new("INVITE", i, "203.0.113.9:5070".parse().unwrap(), "10.20.1.11:5060".parse().unwrap(), "441632960123", ts);
        p.agent = "Z 5.6".into();
        let m = p.request();
        let f = frames::udp(m.src, m.dst, i as u16, &m.bytes);
        e.ingest(m.ts, LinkType::Ethernet, &f);
        while e.poll_journal().is_some() {}
        while e.poll_call().is_some() {}
        drop(f);
        if i % 1000 == 999 && i >= 5000 {
            let heap = (live() - base) as f64;
            let counted = e.state_bytes() as f64;
            worst = worst.max(heap / counted);
            best = best.min(heap / counted);
            assert!(heap as usize <= limit + limit / 20 + (1 << 20), "{} MiB of heap over a {} MiB ceiling", heap / 1048576.0, limit >> 20);
        }
    }
    (worst, best, e)
}

#[test]
fn counted_bytes_follow_the_heap_under_a_flood() {
    // without a carrier list the flood makes legs and calls, shed at the ceiling
    let limit = 24 << 20;
    let (worst, best, e) = flood(false, limit, 40_000);
    let g = e.stats().guard.memory;
    eprintln!("no carrier list: heap / counted from {best:.2} to {worst:.2}; {g:?}");
    assert!(g.legs_shed > 10_000, "{g:?}");
    assert!(g.peak_bytes as usize <= limit + (1 << 20), "{g:?}");
    // the count may be a little high, never much lower than the heap
    assert!(worst < 1.1 && best > 0.7, "the heap is {best:.2} to {worst:.2} times what the engine counts");
    drop(e);
    // with one, the screen's tables are all that grows
    let (worst, best, e) = flood(true, limit, 40_000);
    eprintln!("carrier list: heap / counted from {best:.2} to {worst:.2}; {:?}", e.stats().guard.memory);
    assert!(worst < 1.1 && best > 0.5, "the heap is {best:.2} to {worst:.2} times what the engine counts");
}
