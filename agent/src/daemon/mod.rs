//! `cbt-agent run`: the long-running service.
//!
//! ```text
//! capture threads (libpcap, one per interface) ─┐
//! HEP listener thread ──────────────────────────┼─▶ bounded queue ─▶ engine thread ─▶ sled store
//! signals (tokio) ──────── Shutdown / Reload ───┘        │
//!                                  shared status ◀───────┘ ─▶ HTTP (tokio, axum): /status /metrics /healthz / /api
//! ```
//!
//! Durability: every SIP message that reaches the legs is journaled (its
//! phone numbers replaced by keyed hashes); finished calls are written with
//! their day aggregate in one transaction; the store is flushed before a
//! call is counted anywhere, and at least every 50 ms while messages arrive;
//! the engine state is snapshotted every 30 s (and on a clean stop), and the
//! journal since the snapshot is replayed on start. A kill -9 therefore
//! loses at most the last unflushed messages: a gap, recorded, and the calls
//! in progress across it are flagged partial.

pub mod capture;
pub mod hostile;
pub mod http;
pub mod persister;
pub mod status;
mod today;

use crate::config::Config;
use crate::store::{Gap, Store};
use anyhow::Result;
use capture::SourceStats;
use cbt_proto::call::CallEvent;
use cbt_proto::metrics::{Aggregator, TIME_CATEGORIES};
use cbt_proto::number::Hasher;
use cbt_proto::site::Site;
use cbt_proto::time::{Micros, SECOND};
use cbt_proto::{Engine, EngineConfig, LinkType, Timestamp};
use status::{SourceStatus, Status};
use crate::upload::deliver::{self, Control, UploadStatus};
use crate::upload::Scheduler;
use cbt_proto::persist::v1::HourV1;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Where the daemon's time comes from: the wall clock, or a test's own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        capture::now()
    }
}

/// A clock moved by hand (tests).
#[derive(Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at(t: Timestamp) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(t.micros()))
    }

    pub fn advance(&self, d: Micros) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::Relaxed))
    }
}

/// What the engine thread receives.
pub enum Input {
    /// Link-layer frames of one capture (`linktype` is pcap's).
    Frames { linktype: i32, batch: capture::Batch },
    /// HEP datagrams.
    Hep(capture::Batch),
    Reload,
    Shutdown,
}

/// State shared with the HTTP side.
pub struct Shared {
    pub status: RwLock<Status>,
    /// Unix seconds of the engine thread's last loop.
    pub heartbeat: AtomicU64,
    pub store: RwLock<Option<Arc<Store>>>,
    pub site: RwLock<Site>,
    pub upload: Arc<Mutex<UploadStatus>>,
    /// The name day documents carry (`upload.agent_id` or the host name).
    pub agent_id: RwLock<String>,
    /// The practice manager's page and staffing settings (`[page]`, `[staffing]`).
    pub page: RwLock<crate::config::PageConfig>,
}

const STATUS_EVERY: Duration = Duration::from_secs(1);
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);
/// Days are closed, documents offered and the activity record written this often.
const DAYS_EVERY: Duration = Duration::from_secs(60);
/// Packet time moves on this often without traffic, whatever is due (the
/// engine's own timers are followed through `poll_timeout`).
const IDLE_TICK: Duration = Duration::from_secs(5);

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("cbt_agent={level},warn")));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub fn run(config_path: PathBuf) -> Result<ExitCode> {
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&config.agent.log_level);
    let a = config.agent.clone();
    let secret_path = config.secret_file.clone().unwrap_or_else(|| a.store_dir.join("secret"));
    let key = crate::secret::load_or_create(&secret_path)?;
    let hasher = Hasher::new(key, &config.site.country_code);
    let site = config.site(&hasher);
    let mut engine = Engine::new(EngineConfig {
        hash_key: key,
        country_code: config.site.country_code.clone(),
        site: Some(site.clone()),
        emit_legs: false,
        journal: true,
        legs: cbt_proto::LegConfig {
            adopt_orphans: true,
            ..config.legs.clone()
        },
        guard: config.guard.engine(),
        wire: cbt_proto::wire::WireConfig {
            // HEP inside captured traffic is believed from allowed senders only
            hep_from: Some(config.guard.hep_senders()),
            ..Default::default()
        },
        ..EngineConfig::default()
    });
    let queue = Arc::new(hostile::QueueBudget::new(config.guard.queue_memory, a.queue));
    let shared = Arc::new(Shared {
        status: RwLock::new(Status::default()),
        heartbeat: AtomicU64::new(0),
        store: RwLock::new(None),
        site: RwLock::new(site.clone()),
        upload: Arc::new(Mutex::new(UploadStatus::default())),
        agent_id: RwLock::new(crate::upload::agent_id(config.upload.as_ref())),
        page: RwLock::new(config.page.clone()),
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let started = clock.now();
    let published = shared.clone();
    let persister = persister::Persister::new(
        a.store_dir.clone(),
        a.cache_bytes,
        a.memory_calls,
        a.snapshot_every,
        clock.clone(),
        Box::new(move |store| *published.store.write().unwrap_or_else(|e| e.into_inner()) = store),
    );
    let mut state = Daemon {
        config,
        config_path: config_path.clone(),
        hasher,
        site,
        persister,
        clock,
        today: today::LiveToday::default(),
        sources: Vec::new(),
        status: status::StatusBuilder::new(started),
        shared: shared.clone(),
        dropped_seen: 0,
        scheduler: None,
        upload_tx: None,
        activity: BTreeMap::new(),
        activity_seen: None,
        closed_through: None,
        guard: Guard {
            queue: queue.clone(),
            hep: None,
            watch: hostile::Watch::default(),
        },
    };
    state.persister.open(&mut engine);
    // sources
    let (tx, rx) = sync_channel::<Input>(a.queue);
    let stop = Arc::new(AtomicBool::new(false));
    for iface in &a.interfaces {
        let s = Arc::new(SourceStats {
            name: iface.clone(),
            ..SourceStats::default()
        });
        capture::spawn(iface.clone(), a.clone(), tx.clone(), s.clone(), stop.clone(), queue.clone());
        state.sources.push(("capture", s));
    }
    if let Some(addr) = a.hep_listen {
        let s = Arc::new(SourceStats {
            name: format!("hep {addr}"),
            ..SourceStats::default()
        });
        match capture::bind_hep(addr, a.hep_receive_buffer) {
            Ok((sock, granted)) => {
                // Linux reports twice the size asked for (it counts overhead)
                if granted < a.hep_receive_buffer {
                    tracing::warn!(
                        "HEP socket queue is {} KiB, not the {} KiB asked for: raise net.core.rmem_max (sysctl) or lower hep.receive_buffer; bursts beyond it are dropped (and counted)",
                        granted / 1024,
                        a.hep_receive_buffer / 1024
                    );
                }
                let guard = Arc::new(hostile::HepGuard::new(state.config.guard.hep_senders()));
                state.guard.hep = Some(guard.clone());
                capture::spawn_hep(sock, tx.clone(), s.clone(), stop.clone(), queue.clone(), guard)
            }
            Err(e) => {
                tracing::error!("cannot listen for HEP on {addr}: {e}");
                *s.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("cannot listen on {addr}: {e}"));
            }
        }
        state.sources.push(("hep", s));
    }
    state.start_upload();
    state.refresh_status(&engine);
    http::spawn(a.status_listen.clone(), shared.clone(), tx.clone())?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        interfaces = ?a.interfaces,
        status = %a.status_listen,
        "cbt-agent running"
    );
    let code = state.main_loop(&mut engine, rx);
    stop.store(true, Ordering::Relaxed);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    state.shutdown(&mut engine);
    Ok(code)
}

struct Daemon {
    config: Config,
    config_path: PathBuf,
    hasher: Hasher,
    site: Site,
    /// The store, the journal, calls held in memory, snapshots.
    persister: persister::Persister,
    clock: Arc<dyn Clock>,
    /// Today's figures, live.
    today: today::LiveToday,
    sources: Vec<(&'static str, Arc<SourceStats>)>,
    /// Rates, the 10-minute window and the diagnosis rules.
    status: status::StatusBuilder,
    shared: Arc<Shared>,
    dropped_seen: u64,
    /// Uploading (`[upload]`): what to send when, and the sending thread.
    scheduler: Option<Scheduler>,
    upload_tx: Option<Sender<Control>>,
    /// Capture activity by (local date, hour) not yet written.
    activity: BTreeMap<(chrono::NaiveDate, u8), HourV1>,
    /// (time, messages, parse errors, drops, b2bua ambiguous) at the last status refresh.
    activity_seen: Option<(Timestamp, u64, u64, u64, u64)>,
    /// The store's last closed date (a call stored on or before it makes it dirty).
    closed_through: Option<chrono::NaiveDate>,
    guard: Guard,
}

/// The daemon's defences against floods (see `hostile`).
struct Guard {
    queue: Arc<hostile::QueueBudget>,
    hep: Option<Arc<hostile::HepGuard>>,
    watch: hostile::Watch,
}

impl Daemon {
    fn main_loop(&mut self, engine: &mut Engine, rx: Receiver<Input>) -> ExitCode {
        let mut last_status = Instant::now();
        let mut last_tick = Instant::now();
        let mut last_maintenance: Option<Instant> = None;
        let mut last_days: Option<Instant> = None;
        let mut last_running = usize::MAX;
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut last_watchdog = Instant::now();
        loop {
            let mut got = 0usize;
            // journaled messages wait at most FLUSH_EVERY for their flush,
            // even when nothing else arrives
            let wait = self.persister.wait();
            match rx.recv_timeout(wait) {
                Ok(input) => {
                    let Some(n) = self.feed(engine, input) else { return ExitCode::SUCCESS };
                    got += n;
                    // take what is queued, in order, bounded per round
                    while got < 4096 {
                        match rx.try_recv() {
                            Ok(input) => {
                                let Some(n) = self.feed(engine, input) else { return ExitCode::SUCCESS };
                                got += n;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
            }
            // timers run when the engine says something is due (packet
            // time is the wall clock's in a live capture)
            let t = self.clock.now();
            if engine.poll_timeout().is_some_and(|due| due <= t) || last_tick.elapsed() >= IDLE_TICK {
                last_tick = Instant::now();
                engine.tick(t);
            }
            self.persist(engine);
            self.persister.retry(engine);
            let running = self.sources.iter().filter(|(_, s)| s.running.load(Ordering::Relaxed)).count();
            if last_status.elapsed() >= STATUS_EVERY || running != last_running {
                last_running = running;
                last_status = Instant::now();
                // a restart's gap ends when the first source captured again
                let since = self.sources.iter().map(|(_, s)| s.since.load(Ordering::Relaxed)).filter(|t| *t > 0).min();
                if let Some(since) = since {
                    self.persister.capture_began(engine, Timestamp(since));
                }
                self.watch_drops(engine);
                self.refresh_status(engine);
            }
            self.persister.snapshot_if_due(engine);
            // at least as often as today's documents are due
            let days_every = self.config.upload.as_ref().map_or(DAYS_EVERY, |u| DAYS_EVERY.min(Duration::from_micros(u.interval.max(0) as u64)));
            if last_days.is_none_or(|t| t.elapsed() >= days_every) {
                last_days = Some(Instant::now());
                self.days();
            }
            if last_maintenance.is_none_or(|t| t.elapsed() >= MAINTENANCE_EVERY) {
                last_maintenance = Some(Instant::now());
                self.maintenance();
            }
            if let Some(us) = watchdog {
                if last_watchdog.elapsed() >= us {
                    last_watchdog = Instant::now();
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            self.shared.heartbeat.store((self.clock.now().micros() / SECOND) as u64, Ordering::Relaxed);
        }
    }

    /// Handles one input. Returns the packets it held (None: stop).
    fn feed(&mut self, engine: &mut Engine, input: Input) -> Option<usize> {
        let n = match &input {
            Input::Frames { batch, .. } | Input::Hep(batch) => batch.len(),
            _ => 1,
        };
        match input {
            Input::Frames { linktype, batch } => {
                self.guard.queue.release_many(batch.len(), batch.bytes());
                if let Some(l) = LinkType::from_linktype(linktype) {
                    for (ts, frame) in batch.iter() {
                        engine.ingest(ts, l, frame);
                    }
                }
            }
            Input::Hep(batch) => {
                self.guard.queue.release_many(batch.len(), batch.bytes());
                for (ts, datagram) in batch.iter() {
                    engine.ingest_hep(ts, datagram);
                }
            }
            Input::Reload => self.reload(engine),
            Input::Shutdown => return None,
        }
        Some(n)
    }

    /// Journals messages and stores finished calls (the persister), then
    /// counts what is durable.
    fn persist(&mut self, engine: &mut Engine) {
        let acked = self.persister.persist(engine);
        self.acknowledge(&acked);
    }

    fn acknowledge(&mut self, acked: &[CallEvent]) {
        let Some(store) = self.persister.store().cloned() else { return };
        let today = self.local_today();
        self.today.acknowledged(&self.site, &self.persister, today, acked);
        for ev in acked {
            self.late(&store, ev);
        }
    }

    /// The site's local date now.
    fn local_today(&self) -> chrono::NaiveDate {
        Aggregator::new(&self.site).local_date(self.clock.now())
    }

    fn today_agg(&mut self) -> &mut Aggregator {
        let today = self.local_today();
        self.today.figures(&self.site, &self.persister, today)
    }

    /// Kernel or queue drops mean packets were missed: a gap.
    fn watch_drops(&mut self, engine: &mut Engine) {
        let dropped: u64 = self
            .sources
            .iter()
            .map(|(_, s)| s.kernel_dropped.load(Ordering::Relaxed) + s.if_dropped.load(Ordering::Relaxed) + s.queue_dropped.load(Ordering::Relaxed))
            .sum();
        if dropped > self.dropped_seen {
            let n = dropped - self.dropped_seen;
            self.dropped_seen = dropped;
            let t = self.clock.now();
            let from = t.add(-(STATUS_EVERY.as_micros() as Micros));
            let partial = engine.mark_gap(from, t);
            let gap = Gap {
                from,
                to: t,
                reason: format!("{n} packets dropped before the engine; {partial} legs in progress marked partial"),
            };
            tracing::warn!("{}", gap.reason);
            self.persister.add_gap(gap);
        }
    }

    /// A call or callback stored for a date already closed: that date's
    /// figures must be computed (and sent) again.
    fn late(&self, store: &Store, ev: &CallEvent) {
        let Some(closed) = self.closed_through else { return };
        let agg = Aggregator::new(&self.site);
        let date = match ev {
            CallEvent::Finished(r) => agg.local_date(r.started),
            CallEvent::CallbackMade { at, .. } => agg.local_date(*at),
        };
        if date <= closed {
            if let Err(e) = store.mark_dirty(date) {
                tracing::warn!("cannot mark {date} for recomputing: {e:#}");
            }
        }
    }

    /// Every minute: the activity record, days that closed, documents.
    fn days(&mut self) {
        let Some(store) = self.persister.store().cloned() else { return };
        if !self.activity.is_empty() {
            match store.add_activity(&self.activity) {
                Ok(()) => self.activity.clear(),
                Err(e) => tracing::warn!("cannot write the activity record: {e:#}"),
            }
        }
        let t = self.clock.now();
        let result = match self.scheduler.as_mut() {
            Some(sch) => sch.run(&store, &self.site, t).map(|o| {
                if o.documents > 0 {
                    tracing::debug!(closed_days = o.closed_days, documents = o.documents, "documents queued for upload");
                }
                o.closed_days
            }),
            None => {
                let today = Aggregator::new(&self.site).local_date(t.add(-self.site.settle.max(0)));
                store.close_days(&self.site, today).map(|d| d.len())
            }
        };
        match result {
            Ok(n) if n > 0 => tracing::info!(days = n, "day figures closed and kept"),
            Err(e) => tracing::warn!("closing days or making documents failed: {e:#}"),
            _ => {}
        }
        self.closed_through = store.closed_through().ok().flatten();
    }

    /// Starts (or stops) the uploader to match the configuration.
    fn start_upload(&mut self) {
        let cfg = self.config.upload.clone();
        *self.shared.agent_id.write().unwrap_or_else(|e| e.into_inner()) = crate::upload::agent_id(cfg.as_ref());
        {
            let mut st = self.shared.upload.lock().unwrap_or_else(|e| e.into_inner());
            st.enabled = cfg.is_some();
            st.url = cfg.as_ref().map(|c| c.url.clone()).unwrap_or_default();
            st.agent_id = cfg.as_ref().map(|c| c.agent_id.clone()).unwrap_or_default();
        }
        match (cfg, self.upload_tx.as_ref()) {
            (Some(cfg), Some(tx)) => {
                match self.scheduler.as_mut() {
                    Some(s) => s.reconfigure(&cfg),
                    None => self.scheduler = Some(Scheduler::new(&cfg)),
                }
                let _ = tx.send(Control::Reload(Some(cfg)));
            }
            (Some(cfg), None) => {
                self.scheduler = Some(Scheduler::new(&cfg));
                let (tx, rx) = channel();
                let shared = self.shared.clone();
                let store = move || shared.store.read().unwrap_or_else(|e| e.into_inner()).clone();
                match deliver::spawn(cfg.clone(), store, self.shared.upload.clone(), rx) {
                    Ok(_) => {
                        tracing::info!(url = %cfg.url, agent = %cfg.agent_id, "uploading day documents");
                        self.upload_tx = Some(tx);
                    }
                    Err(e) => tracing::error!("cannot start the uploader: {e}"),
                }
            }
            (None, Some(tx)) => {
                let _ = tx.send(Control::Stop);
                self.upload_tx = None;
                self.scheduler = None;
                tracing::info!("uploading stopped ([upload] removed)");
            }
            (None, None) => {}
        }
    }

    /// Adds what the last status period saw to the activity record.
    fn record_activity(&mut self, t: Timestamp, messages: u64, parse_errors: u64, dropped: u64, ambiguous: u64, capturing: bool, partial_view: bool) {
        let prev = self.activity_seen.replace((t, messages, parse_errors, dropped, ambiguous));
        let Some((t0, m0, p0, d0, a0)) = prev else { return };
        let Some(local) = t.to_datetime().map(|x| x.with_timezone(&self.site.timezone).naive_local()) else { return };
        let secs = (t.since(t0) / SECOND).clamp(0, 3600) as u32;
        let h = self.activity.entry((local.date(), chrono::Timelike::hour(&local) as u8)).or_default();
        h.add(&HourV1 {
            up_s: if capturing { secs } else { 0 },
            partial_view_s: if partial_view { secs } else { 0 },
            messages: messages.saturating_sub(m0),
            parse_errors: parse_errors.saturating_sub(p0),
            dropped: dropped.saturating_sub(d0),
            b2bua_ambiguous: ambiguous.saturating_sub(a0),
        });
    }

    fn maintenance(&mut self) {
        let Some(store) = self.persister.store().cloned() else { return };
        let now = self.clock.now();
        let upgraded_at = store.upgraded_at().unwrap_or(None);
        match store.prune_calls(&self.site, self.config.agent.call_cut(now, upgraded_at)) {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "call records older than store.call_retention removed (day figures kept)"),
            Err(e) => tracing::warn!("pruning failed: {e:#}"),
            _ => {}
        }
        let days_cut = Aggregator::new(&self.site).local_date(now.add(-self.config.agent.retention));
        match store.prune_days(days_cut) {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "day figures older than store.retention removed"),
            Err(e) => tracing::warn!("pruning day figures failed: {e:#}"),
            _ => {}
        }
    }

    fn reload(&mut self, engine: &mut Engine) {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("configuration not reloaded, the running one stays:\n{e}");
                return;
            }
        };
        let (old_a, new_a) = (&self.config.agent, &new.agent);
        let mut needs_restart = Vec::new();
        if old_a.interfaces != new_a.interfaces {
            needs_restart.push("capture.interfaces");
        }
        if old_a.filter != new_a.filter || old_a.sip_ports != new_a.sip_ports || old_a.snaplen != new_a.snaplen || old_a.buffer_bytes != new_a.buffer_bytes {
            needs_restart.push("capture settings");
        }
        if old_a.hep_listen != new_a.hep_listen {
            needs_restart.push("hep.listen");
        }
        if old_a.store_dir != new_a.store_dir || old_a.cache_bytes != new_a.cache_bytes {
            needs_restart.push("store.dir / store.cache");
        }
        if old_a.status_listen != new_a.status_listen {
            needs_restart.push("status.listen");
        }
        if self.config.page.lan != new.page.lan {
            needs_restart.push("page.lan");
        }
        *self.shared.page.write().unwrap_or_else(|e| e.into_inner()) = new.page.clone();
        if new.secret_file != self.config.secret_file || new.site.country_code != self.config.site.country_code {
            needs_restart.push("privacy.secret_file / country_code");
        }
        if new.guard != self.config.guard {
            needs_restart.push("hep.allow / scanners / limits");
        }
        let site = new.site(&self.hasher);
        engine.set_site(site.clone());
        *self.shared.site.write().unwrap_or_else(|e| e.into_inner()) = site.clone();
        self.site = site;
        self.today.forget();
        let keep_agent = self.config.agent.clone();
        let keep_guard = self.config.guard.clone();
        self.config = new;
        self.start_upload();
        if needs_restart.is_empty() {
            tracing::info!("configuration reloaded");
        } else {
            // keep running with the old values of what cannot change live
            let (retention, call_retention) = (self.config.agent.retention, self.config.agent.call_retention);
            let quiet = self.config.agent.quiet;
            let snapshot_every = self.config.agent.snapshot_every;
            self.config.agent = keep_agent;
            self.config.guard = keep_guard;
            self.config.agent.retention = retention;
            self.config.agent.call_retention = call_retention;
            self.config.agent.quiet = quiet;
            self.config.agent.snapshot_every = snapshot_every;
            tracing::warn!(
                "configuration reloaded (practices, network roles and rules apply now); these changed and need a restart to apply: {}",
                needs_restart.join(", ")
            );
        }
        self.persister.set_memory_calls(self.config.agent.memory_calls);
        self.persister.set_snapshot_every(self.config.agent.snapshot_every);
    }

    fn shutdown(&mut self, engine: &mut Engine) {
        self.persist(engine);
        if let Some(tx) = self.upload_tx.take() {
            let _ = tx.send(Control::Stop);
        }
        if let Some(store) = self.persister.store() {
            if let Err(e) = store.add_activity(&self.activity) {
                tracing::warn!("cannot write the activity record: {e:#}");
            }
        }
        let acked = self.persister.shutdown(engine);
        self.acknowledge(&acked);
    }

    fn refresh_status(&mut self, engine: &Engine) {
        let st = engine.stats();
        let t = self.clock.now();
        let a = &self.config.agent;
        let sources = self
            .sources
            .iter()
            .map(|(kind, src)| SourceStatus {
                name: src.name.clone(),
                kind: kind.to_string(),
                linktype: src.linktype.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                running: src.running.load(Ordering::Relaxed),
                since: Some(src.since.load(Ordering::Relaxed)).filter(|t| *t > 0).map(Timestamp),
                packets: src.packets.load(Ordering::Relaxed),
                bytes: src.bytes.load(Ordering::Relaxed),
                kernel_dropped: src.kernel_dropped.load(Ordering::Relaxed),
                if_dropped: src.if_dropped.load(Ordering::Relaxed),
                queue_dropped: src.queue_dropped.load(Ordering::Relaxed),
                error: src.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            })
            .collect();
        let p = &self.persister;
        let store = p.store();
        let store_status = status::StoreStatus {
            healthy: store.is_some(),
            error: p.error().map(|e| e.to_string()),
            dir: a.store_dir.display().to_string(),
            size_bytes: store.map_or(0, |x| x.size_on_disk()),
            calls_stored: store.map_or(0, |x| x.call_count() as u64),
            held_in_memory: p.held_in_memory() as u64,
            lost_in_memory: p.lost_in_memory(),
            snapshot_age_s: p.last_snapshot().map(|l| (t.since(l) / SECOND).max(0) as u64),
            outbox: store.map_or(0, |x| x.outbox_len() as u64),
            recovered: p.recovered().map(str::to_string),
            problems: store.map(|x| x.problems()).unwrap_or_default(),
            kept_aside_records: store.map_or(0, |x| x.kept_aside().0 as u64),
            kept_aside_files: store.map_or(0, |x| x.kept_aside().1 as u64),
        };
        let gaps = self.persister.gaps().iter().rev().take(20).cloned().collect();
        let hostile = hostile::HostileStatus::new(st.guard.clone(), st.wire.hep_rejected, self.guard.hep.as_deref(), &self.guard.queue);
        let upload = self.upload_status();
        let today = self.today_status(t);
        let config_path = self.config_path.display().to_string();
        let observed = status::Observed {
            now: t,
            config_path: &config_path,
            stats: &st,
            reassembly_bytes: engine.buffered_bytes() as u64,
            sources,
            store: store_status,
            today,
            gaps,
            hostile,
            upload,
        };
        let rules = status::Rules {
            site: &self.site,
            quiet: self.config.agent.quiet,
            snapshot_every: self.config.agent.snapshot_every,
            memory_calls: self.config.agent.memory_calls,
            store_retry: persister::STORE_RETRY,
        };
        let mut s = self.status.build(observed, &rules);
        let watched = self.guard.watch.diagnostics(&s.hostile, t);
        s.diagnostics.extend(watched);
        let dropped: u64 = s.sources.iter().map(|x| x.kernel_dropped + x.if_dropped + x.queue_dropped).sum();
        let parse_errors: u64 = s.sip.parse_errors.values().sum();
        let capturing = s.sources.iter().any(|x| x.running);
        let partial_view = s.view == "partial";
        self.record_activity(t, s.sip.messages, parse_errors, dropped, s.engine.b2bua_ambiguous, capturing, partial_view);
        *self.shared.status.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Today's figures per practice (configured ones first).
    fn today_status(&mut self, t: Timestamp) -> status::Today {
        let practices: Vec<String> = self.site.practices.iter().map(|p| p.ods.clone()).collect();
        let agg = self.today_agg();
        let date = agg.local_date(t);
        let mut today = status::Today {
            date: date.to_string(),
            practices: Vec::new(),
        };
        let mut names = practices;
        for (p, d) in agg.days().keys() {
            if *d == date && !names.contains(p) {
                names.push(p.clone());
            }
        }
        for p in names {
            let day = agg.days().get(&(p.clone(), date)).cloned().unwrap_or_default();
            use cbt_proto::metrics::Indicator::*;
            let band = |b: usize| [day.band(Cbt003, b), day.band(Cbt004, b), day.band(Cbt002, b), day.band(Cbt005, b)];
            let (abandoned, callbacks_made) = (day.abandoned_missed + day.abandoned_in_ivr, day.total(Cbt006));
            today.practices.push(status::TodayPractice {
                practice: p,
                inbound: day.total(Cbt001),
                answered: day.total(Cbt003),
                missed: day.total(Cbt004),
                ended_in_ivr: day.total(Cbt002),
                callback_requested: day.total(Cbt005),
                callbacks_made,
                abandoned,
                by_band: TIME_CATEGORIES.iter().enumerate().map(|(b, l)| (l.to_string(), band(b))).collect(),
            });
        }
        today
    }

    /// The uploader's state with the outbox's.
    fn upload_status(&self) -> UploadStatus {
        let mut u = self.shared.upload.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !u.enabled {
            return u;
        }
        if let Some(store) = self.persister.store() {
            if let Ok(items) = store.outbox_items() {
                u.outbox = items.len() as u64;
                u.oldest_undelivered = items.iter().map(|i| i.date).min().map(|d| d.to_string());
                u.parked = items
                    .iter()
                    .filter_map(|i| {
                        i.parked.as_ref().map(|r| deliver::Parked {
                            practice: i.practice.clone(),
                            date: i.date.to_string(),
                            revision: i.revision,
                            reason: r.clone(),
                        })
                    })
                    .collect();
            }
        }
        u
    }
}
