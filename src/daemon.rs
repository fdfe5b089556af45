//! Wiring for `sendgate run`: the spool, the engine, the upstream, signals, systemd
//! notify and watchdog, the status file, and shutdown.
//!
//! One thread owns the engine (and so the store); it sleeps on one channel until the
//! next due time, a new job file (inotify), a finished send, or a signal. Sends run on
//! a small tokio runtime and report back on that channel. A store error stops every
//! dispatch at once and exits 74 (SPEC P5); systemd restarts the worker.

use crate::clock::{Clock, ScaledClock, SystemClock};
use crate::config::{Config, UpstreamKind};
use crate::contract::events::FetchError;
use crate::contract::Outcome;
use crate::engine::{Engine, EngineConfig};
use crate::spool::{self, Claimed, Leftover, ReadError, Spool, QUARANTINE_AFTER_STARTS};
use crate::store::{ApplyOutcome, Begin, OpenOptions, Reservation, Settings, Source, Store, StoreError};
use crate::upstream::{events::HttpEvents, exec::Exec, http::Http, sim::SimUpstream, EventSource, Upstream};
use crate::{admin, exit, log};
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends in flight at once over all accounts.
pub const MAX_INFLIGHT: usize = 32;
/// The engine's inbox. Completions never exceed `MAX_INFLIGHT`, so they always fit;
/// wake-ups (files, signals) use `try_send` and a full inbox only drops a duplicate
/// wake-up (the rescan catches anything it stood for).
const INBOX: usize = 4 * MAX_INFLIGHT + 64;
/// Job files taken per pass before the engine gets a turn.
const MAX_FILES_PER_PASS: usize = 64;
/// A send gets this much beyond `upstream.timeout_s` before it is abandoned as
/// `maybe_delivered` (the upstream implementations enforce the timeout themselves).
const SEND_GRACE: Duration = Duration::from_secs(5);
/// Reads a claimed file gets against an error that may pass (no file descriptors or
/// memory left, an I/O error), one per spool pass, before it is rejected with that error.
const MAX_READ_ATTEMPTS: u32 = 5;
/// How long a clean stop waits for the cluster task to revoke its lease.
const CLUSTER_STOP_WAIT: Duration = Duration::from_secs(2);
/// Finished actions and old ledger entries are pruned this often, in bounded batches.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_BATCH: usize = 10_000;
/// Actions the status file's detail reads each time it is written (`status.every_s`):
/// bounded so that a big queue costs the engine thread little.
const STATUS_FILE_SCAN_MAX: usize = 100_000;

enum Msg {
    Spool,
    /// An operator request from the admin socket, answered between ticks.
    Admin(admin::server::Call),
    Done(Box<Reservation>, Outcome),
    /// What a poll of the event feed brought (at most one poll is under way).
    Page(Result<Vec<u8>, FetchError>),
    Stop,
    Reload,
    /// What the cluster task said (SPEC §12), with `[cluster]`.
    Cluster(crate::cluster::Notice),
}

/// Where a claimed file goes once it is read and applied (or refused).
enum Move {
    Done,
    Reject(String),
}

/// A claimed file whose last spool step failed: it stays in `processing/` and the step
/// is tried again at the next pass, before anything new is claimed.
enum Pending {
    Read { attempts: u32 },
    Move(Move),
}

struct Stuck {
    claim: Claimed,
    next: Pending,
}

#[derive(Debug)]
enum Fatal {
    Store(StoreError),
    Other(String),
}

impl From<StoreError> for Fatal {
    fn from(e: StoreError) -> Self {
        Fatal::Store(e)
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    // Outside systemd (no NOTIFY_SOCKET) this is a no-op.
    let _ = sd_notify::notify(false, states);
}

fn build_clock(c: &Config) -> Arc<dyn Clock> {
    match (c.clock.start, c.clock.speed) {
        (None, None) => Arc::new(SystemClock),
        (start, speed) => Arc::new(ScaledClock::new(
            start.unwrap_or_else(Utc::now),
            speed.unwrap_or(1.0),
        )),
    }
}

/// The upstream, and its event feed when there is one (SPEC §9): http with
/// `upstream.events = true`, and always the `sim`, which feeds its own.
type Upstreams = (Arc<dyn Upstream>, Option<Arc<dyn EventSource>>);

fn build_upstream(c: &Config, clock: &Arc<dyn Clock>) -> Result<Upstreams, String> {
    let u = &c.upstream;
    Ok(match u.kind {
        UpstreamKind::Http => {
            let events: Option<Arc<dyn EventSource>> = match u.events {
                true => Some(Arc::new(HttpEvents::new(&u.url, u.timeout_s)?)),
                false => None,
            };
            (Arc::new(Http::new(&u.url, u.timeout_s)?), events)
        }
        UpstreamKind::Exec => (Arc::new(Exec::new(u.command.clone(), u.timeout_s)), None),
        UpstreamKind::Sim => {
            let sim = Arc::new(SimUpstream::new(u.seed, Arc::clone(clock)));
            (sim.clone(), Some(sim))
        }
    })
}

fn engine_config(c: &Config, seed: u64) -> EngineConfig {
    EngineConfig {
        min_gap_s: c.pacing.min_gap_s,
        max_gap_s: c.pacing.max_gap_s,
        max_inflight: MAX_INFLIGHT,
        seed,
        breaker_failures: c.upstream.breaker_failures,
        breaker_max_s: c.upstream.breaker_max_s,
    }
}

/// `sendgate run`: returns the exit code.
pub fn run(config: Config, config_path: Option<PathBuf>) -> i32 {
    log::init(config.log.format);
    // SPEC §7: the metrics address is checked at start, before the store is opened.
    let metrics_listener = match config
        .metrics
        .listen
        .map(crate::metrics::server::bind)
        .transpose()
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(event = "worker_failed", key = "metrics.listen", error = %e);
            return exit::CONFIG;
        }
    };
    let clock = build_clock(&config);
    if config.clock.start.is_some() || config.clock.speed.is_some() {
        // SPEC §11: under a virtual clock every line carries the worker's own time.
        crate::logline::set_vtime(Arc::clone(&clock));
    }
    let spool = match Spool::open(&config.spool.dir, config.spool.max_file_bytes) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(event = "worker_failed", error = %e, spool = %config.spool.dir.display());
            return exit::FAILURE;
        }
    };
    let settings = Settings::from_config(&config);
    let opts = OpenOptions {
        cache_mb: config.store.cache_mb,
        fail_from_op: None,
        ..OpenOptions::default()
    };
    if let Some(e) = lost_store(&config.store.path, &spool) {
        return store_failed(&e, &config.store.path);
    }
    let store = match Store::open(&config.store.path, settings, opts) {
        Ok(s) => s,
        Err(e) => return store_failed(&e, &config.store.path),
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let engine = match Engine::new(store, engine_config(&config, seed), clock.now()) {
        Ok(e) => e,
        Err(e) => return store_failed(&e, &config.store.path),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sendgate-send")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(event = "worker_failed", error = %e);
            return exit::FAILURE;
        }
    };
    let (upstream, events) = {
        let _guard = runtime.enter();
        match build_upstream(&config, &clock) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(event = "worker_failed", error = %e);
                return exit::CONFIG;
            }
        }
    };
    let metrics = match metrics_listener {
        Some(listener) => {
            let (publisher, latest) = crate::metrics::Publisher::new(engine.store().durable_times());
            if let Err(e) = crate::metrics::server::spawn(&runtime, listener, latest) {
                tracing::error!(event = "worker_failed", key = "metrics.listen", error = %e);
                return exit::FAILURE;
            }
            Some(publisher)
        }
        None => None,
    };
    let (tx, rx) = sync_channel(INBOX);
    let socket = admin::server::socket_path(&config);
    if let Err(e) = start_admin(&runtime, &socket, tx.clone()) {
        tracing::error!(event = "worker_failed", error = %e);
        return exit::FAILURE;
    }
    if let Err(e) = watch_signals(tx.clone()) {
        tracing::error!(event = "worker_failed", error = %e);
        return exit::FAILURE;
    }
    // Kept alive for the whole run (and renewed when `incoming/` is recreated); if
    // inotify is unavailable the rescan still works.
    let watcher = watch_spool(&spool, tx.clone());
    let watched = incoming_id(&spool);
    let store_path = config.store.path.clone();
    let mut engine = engine;
    let cluster = config.cluster.as_ref().map(|c| {
        if c.send_may_outlive_lease(config.upstream.timeout_s) {
            tracing::warn!(
                event = "cluster_lease_short",
                lease_ttl_s = c.lease_ttl_s,
                upstream_timeout_s = config.upstream.timeout_s,
                "a send may outlive its lease: keep cluster.lease_ttl_s at least twice upstream.timeout_s, \
                 or a slow call can reach the upstream after another worker took the account over"
            );
        }
        engine.enable_fleet();
        let inbox = tx.clone();
        // At most one claim is out, and ownership and up/down notices come one pass of
        // the task at a time: the inbox has room for them beside the completions.
        let notify = Arc::new(move |n| {
            let _ = inbox.send(Msg::Cluster(n));
        });
        crate::cluster::task::spawn(&runtime, c, config.store.retention_days, notify)
    });
    let mut worker = Worker {
        cluster,
        engine,
        spool,
        watcher,
        watched,
        stuck: Vec::new(),
        clock,
        upstream,
        events: None,
        runtime,
        tx,
        rx,
        config,
        config_path,
        started: Instant::now(),
        watchdog: None,
        last_ping: Instant::now(),
        last_status: None,
        deferred: Vec::new(),
        stop_requested: false,
        reload_waiting: false,
        metrics,
    };
    worker.set_events(events);
    let result = worker.run();
    // The socket file goes with the worker (a crash leaves it; the next start replaces it).
    let _ = std::fs::remove_file(&socket);
    match result {
        Ok(()) => {
            notify(&[sd_notify::NotifyState::Stopping]);
            // In-flight calls are over (or abandoned at the stop deadline, as before);
            // then the store is closed so that the next start replays no log.
            let Worker { engine, runtime, .. } = worker;
            drop(runtime);
            match engine.into_store().close() {
                Ok(()) => exit::OK,
                Err(e) => store_failed(&e, &store_path),
            }
        }
        Err(Fatal::Store(e)) => store_failed(&e, &store_path),
        Err(Fatal::Other(e)) => {
            tracing::error!(event = "worker_failed", error = %e);
            exit::FAILURE
        }
    }
}

/// Listen on the admin socket; requests reach the engine through its inbox with
/// `try_send`, so a flood of clients can only be told "busy".
fn start_admin(runtime: &tokio::runtime::Runtime, path: &Path, tx: SyncSender<Msg>) -> Result<(), String> {
    let _guard = runtime.enter();
    let listener = admin::server::bind(path)?;
    let submit: admin::server::Submit = Arc::new(move |call| tx.try_send(Msg::Admin(call)).is_ok());
    runtime.spawn(admin::server::serve(listener, submit));
    Ok(())
}

/// A store about to be created while the spool's `done/` holds applied files: this
/// worker ran before, and its store was removed (a new, empty one would give every cap
/// of the day out again). Only an operator who means to start afresh moves them away.
fn lost_store(path: &Path, spool: &Spool) -> Option<StoreError> {
    let creating = match Store::would_create(path) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let applied = spool.done_count();
    (creating && applied > 0).then(|| StoreError::Damaged {
        path: path.display().to_string(),
        reason: format!(
            "there is no store here, but {} holds {applied} applied job file(s): the store of \
             this worker was removed, and a new, empty one would give every cap of the day out \
             again. Restore the store from a copy; to start afresh on purpose, move the files \
             of done/ away first",
            spool.done_dir().display()
        ),
    })
}

fn store_failed(e: &StoreError, path: &Path) -> i32 {
    tracing::error!(event = "store_failed", path = %path.display(), error = %e.describe(path));
    notify(&[sd_notify::NotifyState::Status("store failed")]);
    e.exit_code()
}

fn watch_signals(tx: SyncSender<Msg>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("sendgate-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let msg = if sig == SIGHUP { Msg::Reload } else { Msg::Stop };
                // A stop must get through: block until the engine takes it.
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

fn watch_spool(spool: &Spool, tx: SyncSender<Msg>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        if let Err(TrySendError::Disconnected(_)) = tx.try_send(Msg::Spool) {
            // The worker is gone; nothing to wake.
        }
    })
    .ok()?;
    w.watch(&spool.incoming_dir(), notify::RecursiveMode::NonRecursive)
        .ok()?;
    Some(w)
}

/// Which directory `incoming/` is now (device, inode), if it is there.
fn incoming_id(spool: &Spool) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(spool.incoming_dir()).ok()?;
    Some((m.dev(), m.ino()))
}

struct Worker {
    /// The cluster task, with `[cluster]` (SPEC §12).
    cluster: Option<crate::cluster::task::Handle>,
    engine: Engine,
    spool: Spool,
    watcher: Option<notify::RecommendedWatcher>,
    /// The `incoming/` the watcher watches (device, inode).
    watched: Option<(u64, u64)>,
    /// At most one file per pass lands here, and none is claimed while it is not empty.
    stuck: Vec<Stuck>,
    clock: Arc<dyn Clock>,
    upstream: Arc<dyn Upstream>,
    /// The event feed, when there is one.
    events: Option<Arc<dyn EventSource>>,
    runtime: tokio::runtime::Runtime,
    tx: SyncSender<Msg>,
    rx: Receiver<Msg>,
    config: Config,
    config_path: Option<PathBuf>,
    started: Instant,
    /// Snapshots for the metrics listener, with `metrics.listen` set.
    metrics: Option<crate::metrics::Publisher>,
    /// Half the systemd watchdog interval, when systemd asks for pings.
    watchdog: Option<Duration>,
    last_ping: Instant,
    /// When the status file was last written.
    last_status: Option<Instant>,
    /// Messages that arrived while a file was being applied, for the main loop.
    deferred: Vec<Msg>,
    /// A SIGTERM or SIGINT came while a file was being applied and waits in `deferred`:
    /// nothing new is dispatched or claimed from then on (SPEC §10: a stop takes no new
    /// work); the file is dropped if only staged, else finished (`take_file`).
    stop_requested: bool,
    /// A SIGHUP came while a file was being applied and waits in `deferred`: the caps
    /// it may lower are not used for a dispatch before it is handled.
    reload_waiting: bool,
}

impl Worker {
    fn run(&mut self) -> Result<(), Fatal> {
        let c = &self.config;
        tracing::info!(
            event = "worker_started",
            store = %c.store.path.display(),
            spool = %c.spool.dir.display(),
            upstream = c.upstream.kind.as_str(),
            pid = std::process::id()
        );
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("running"),
        ]);
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        self.watchdog = watchdog;
        let mut spool_due = true;
        let mut leftovers = true;
        let (mut last_rescan, mut last_prune) = (Instant::now(), Instant::now());
        let mut stop_deadline: Option<Instant> = None;
        loop {
            // Read every turn: SIGHUP may have changed it.
            let rescan = Duration::from_secs(self.config.spool.rescan_s);
            if stop_deadline.is_none()
                && !self.stop_requested
                && (spool_due || last_rescan.elapsed() >= rescan)
            {
                self.take_files(leftovers)?;
                leftovers = false;
                spool_due = false;
                last_rescan = Instant::now();
                // A file can take long: a stop that came at its end is seen before any
                // dispatch too.
                while let Ok(m) = self.rx.try_recv() {
                    self.defer(m);
                }
            }
            // A stop or a reload that came during a file waits in `deferred`: no
            // dispatch before it is handled.
            if stop_deadline.is_none() && !self.stop_requested && !self.reload_waiting {
                let now = self.clock.now();
                for r in self.engine.tick(now)? {
                    self.send(r);
                }
                self.fleet_io(now)?;
                if let Some(after) = self.engine.feed_poll_due(now)? {
                    self.fetch_events(after);
                }
                if last_prune.elapsed() >= PRUNE_EVERY {
                    self.engine.store().prune(now, PRUNE_BATCH)?;
                    self.engine.store().settle_campaigns(now, PRUNE_BATCH)?;
                    last_prune = Instant::now();
                }
            }
            self.flush_log()?;
            if !self.status_due()?
                && self
                    .metrics
                    .as_ref()
                    .and_then(|m| m.due_at())
                    .is_some_and(|t| t <= Instant::now())
            {
                self.publish_metrics(self.status_report()?)?;
            }
            self.ping_watchdog()?;
            if let Some(deadline) = stop_deadline {
                if self.engine.inflight() == 0 || Instant::now() >= deadline {
                    if let Some(c) = &self.cluster {
                        // Revoke the lease: the accounts pass to another worker at once.
                        let (done, wait) = std::sync::mpsc::sync_channel(1);
                        if c.send(crate::cluster::task::Request::Stop(done)) {
                            let _ = wait.recv_timeout(CLUSTER_STOP_WAIT);
                        }
                    }
                    self.engine.settle_answers()?;
                    self.engine.store().make_durable()?;
                    // A clean stop carries the ledger mark to the store's identity file.
                    self.engine.store().checkpoint()?;
                    self.write_status()?;
                    return Ok(());
                }
            }
            let wait = self.wait_time(
                stop_deadline,
                rescan.saturating_sub(last_rescan.elapsed()),
                watchdog,
            )?;
            let mut msgs = std::mem::take(&mut self.deferred);
            let first = match self
                .rx
                .recv_timeout(if msgs.is_empty() { wait } else { Duration::ZERO })
            {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Err(Fatal::Other("inbox closed".into())),
            };
            msgs.extend(first);
            while let Ok(m) = self.rx.try_recv() {
                msgs.push(m);
            }
            let mut done = Vec::new();
            // One operator request a turn: a request over a big store can take seconds,
            // and the next one waits for a tick and the watchdog (SPEC P8, P9).
            let mut answered = false;
            for m in msgs {
                match m {
                    Msg::Admin(call) if answered => self.deferred.push(Msg::Admin(call)),
                    Msg::Spool => spool_due = true,
                    Msg::Done(res, outcome) => {
                        if let Some(m) = &mut self.metrics {
                            m.count(&res, &outcome);
                        }
                        done.push((*res, outcome));
                    }
                    Msg::Page(fetched) => {
                        self.engine.feed_result(fetched, self.clock.now())?;
                    }
                    Msg::Stop => {
                        if stop_deadline.is_none() {
                            tracing::info!(event = "worker_stopping", inflight = self.engine.inflight());
                            notify(&[sd_notify::NotifyState::Stopping]);
                            stop_deadline =
                                Some(Instant::now() + Duration::from_secs(self.config.upstream.timeout_s));
                        }
                    }
                    Msg::Reload => {
                        self.reload_waiting = false;
                        self.reload()?;
                    }
                    Msg::Cluster(n) => {
                        for r in self.engine.fleet_notice(n, self.clock.now())? {
                            self.send(r);
                        }
                    }
                    Msg::Admin(call) => {
                        self.admin(call)?;
                        answered = true;
                    }
                }
            }
            if !done.is_empty() {
                // Answers that arrived together are recorded in one durable commit.
                self.engine.complete_many(done, self.clock.now())?;
            }
        }
    }

    /// Write the status file when `status.every_s` has passed: true when it did.
    fn status_due(&mut self) -> Result<bool, Fatal> {
        let every = Duration::from_secs(self.config.status.every_s);
        if self.last_status.is_some_and(|t| t.elapsed() < every) {
            return Ok(false);
        }
        // A store removed under the worker fails it here, not at the next stop.
        self.engine.store().check_in_place()?;
        self.write_status()?;
        self.last_status = Some(Instant::now());
        Ok(true)
    }

    /// A successful store round trip, then `WATCHDOG=1`, when one is due: a hung store
    /// stops the pings.
    fn ping_watchdog(&mut self) -> Result<(), Fatal> {
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.engine.store().ping()?;
                notify(&[sd_notify::NotifyState::Watchdog]);
                self.last_ping = Instant::now();
            }
        }
        Ok(())
    }

    /// Between two chunks of a big file (SPEC §6): send what is due, record the answers
    /// that came back, write the status file and feed the watchdog. Other messages wait for the main loop.
    fn between_chunks(&mut self) -> Result<(), Fatal> {
        let now = self.clock.now();
        // The inbox first: a stop or a reload that came during the last chunk holds back
        // this chunk's dispatch.
        let mut done = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Done(res, outcome) => {
                    if let Some(m) = &mut self.metrics {
                        m.count(&res, &outcome);
                    }
                    done.push((*res, outcome));
                }
                Msg::Page(fetched) => {
                    self.engine.feed_result(fetched, now)?;
                }
                other => self.defer(other),
            }
        }
        if !done.is_empty() {
            self.engine.complete_many(done, self.clock.now())?;
        }
        // One operator request a step, the oldest first (as the main loop runs one a
        // turn): `pause --all` and the others are answered while a big file applies,
        // and a hold is in force before the next dispatch.
        if let Some(i) = self.deferred.iter().position(|m| matches!(m, Msg::Admin(_))) {
            if let Msg::Admin(call) = self.deferred.remove(i) {
                self.admin(call)?;
            }
        }
        if !self.stop_requested && !self.reload_waiting {
            for r in self.engine.tick(now)? {
                self.send(r);
            }
        }
        self.flush_log()?;
        self.status_due()?;
        self.ping_watchdog()
    }

    /// Keep a message for the main loop. A stop, or a reload (which may lower the caps),
    /// holds back every dispatch until the main loop has handled it.
    fn defer(&mut self, m: Msg) {
        match m {
            Msg::Stop => self.stop_requested = true,
            Msg::Reload => self.reload_waiting = true,
            _ => {}
        }
        self.deferred.push(m);
    }

    fn wait_time(
        &self,
        stop: Option<Instant>,
        rescan_left: Duration,
        watchdog: Option<Duration>,
    ) -> Result<Duration, Fatal> {
        let mut wait = rescan_left.min(Duration::from_secs(self.config.status.every_s));
        if let Some(w) = watchdog {
            wait = wait.min(w);
        }
        if let Some(t) = self.metrics.as_ref().and_then(|m| m.due_at()) {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        if let Some(deadline) = stop {
            return Ok(wait.min(deadline.saturating_duration_since(Instant::now())));
        }
        if let Some(t) = self.engine.next_wake()? {
            wait = wait.min(self.clock.real_until(t));
        }
        Ok(wait.max(Duration::from_millis(1)))
    }

    /// Hand the engine's claim and wanted accounts to the cluster task.
    fn fleet_io(&mut self, now: chrono::DateTime<Utc>) -> Result<(), Fatal> {
        use crate::cluster::task::Request;
        let Some(c) = self.cluster.clone() else {
            return Ok(());
        };
        if let Some(w) = self.engine.fleet_wanted() {
            c.send(Request::Want(w));
        }
        if let Some(claim) = self.engine.fleet_take_claim() {
            // The claim was decided on the store as it is: what it tells etcd is flushed.
            self.engine.settle()?;
            if !c.send(Request::Claim(claim.clone())) {
                for r in self.engine.fleet_claim_lost(claim, now)? {
                    self.send(r);
                }
            }
        }
        Ok(())
    }

    fn send(&self, res: Reservation) {
        let upstream = Arc::clone(&self.upstream);
        let tx = self.tx.clone();
        let limit = Duration::from_secs(self.config.upstream.timeout_s) + SEND_GRACE;
        self.runtime.spawn(async move {
            let outcome = match tokio::time::timeout(limit, upstream.send(res.request.clone())).await {
                Ok(o) => o,
                Err(_) => Outcome::MaybeDelivered {
                    reason: "timeout".into(),
                },
            };
            // Completions are bounded by MAX_INFLIGHT and the inbox holds more.
            let _ = tx.send(Msg::Done(Box::new(res), outcome));
        });
    }

    /// Use `events` as the feed (or none), polled every `upstream.events_every_s`.
    fn set_events(&mut self, events: Option<Arc<dyn EventSource>>) {
        match &events {
            Some(_) => self
                .engine
                .enable_feed(self.config.upstream.events_every_s, self.clock.now()),
            None => self.engine.disable_feed(),
        }
        self.events = events;
    }

    /// One poll of the event feed, off the engine thread; its result comes back as
    /// `Msg::Page`. Bounded in time like a send; a 429 or a failure only delays the
    /// next poll (`Engine::feed_result`), it never touches sending.
    fn fetch_events(&self, after: Option<String>) {
        let Some(source) = self.events.clone() else {
            return;
        };
        let tx = self.tx.clone();
        let limit = Duration::from_secs(self.config.upstream.timeout_s) + SEND_GRACE;
        self.runtime.spawn(async move {
            let fetched = match tokio::time::timeout(limit, source.fetch(after)).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Failed("timeout".into())),
            };
            // One poll at a time, so this fits the inbox beside the completions.
            let _ = tx.send(Msg::Page(fetched));
        });
    }

    /// Log the engine's events, once what they tell of is flushed (`drain_events`).
    fn flush_log(&mut self) -> Result<(), Fatal> {
        for ev in self.engine.drain_events()? {
            log::event(&ev);
        }
        self.engine.events_logged()?;
        Ok(())
    }

    /// Take job files: leftovers in `processing/` first (after a crash), then files
    /// whose last step failed, then new ones in byte order of their names, at most
    /// `MAX_FILES_PER_PASS`. Spool directories that vanished are recreated first.
    fn take_files(&mut self, leftovers: bool) -> Result<(), Fatal> {
        // Every answer in so far reaches the disk before a file is read and parsed: a
        // file that kills the worker (out of memory) must not take them along. That
        // includes the `sent` answers held for the next reservation, which
        // `Engine::begin_file` would record only after the read, and not flush.
        self.engine.settle()?;
        self.repair_spool();
        if leftovers {
            let claimed = self
                .spool
                .leftovers()
                .map_err(|e| Fatal::Other(format!("spool: {e}")))?;
            // Files the worker that died committed without logging `file_applied`
            // (SPEC 6): each is reported now, once, and never taken for a second drop.
            let mut unreported = self.engine.store().unreported_files()?;
            for c in claimed {
                // SPEC 6, poison files: one found here at two start-ups in a row was
                // being applied when the worker died twice; a third try would likely
                // kill it again, and every account on the host with it.
                let starts = self.engine.store().leftover_found(&c.name)?;
                // Hashed only when it can matter: a report of its name, or a quarantine.
                let hash = if starts >= QUARANTINE_AFTER_STARTS || unreported.iter().any(|r| r.name == c.name)
                {
                    self.spool.content_hash(&c).ok()
                } else {
                    None
                };
                let report = hash
                    .and_then(|h| unreported.iter().position(|r| r.name == c.name && r.hash == h))
                    .map(|i| unreported.remove(i));
                let applied = match (&report, hash) {
                    (Some(_), _) => true,
                    (None, Some(h)) => self.engine.store().file_hash_applied(&c.name, h)?,
                    // Unreadable, or not looked at: not applied.
                    (None, None) => false,
                };
                let name = c.name.clone();
                match spool::leftover(starts, applied, report.is_some()) {
                    Leftover::Quarantine => {
                        self.quarantine(c, starts)?;
                        continue;
                    }
                    Leftover::Report => {
                        if let Some(r) = &report {
                            self.engine.report_file(r);
                        }
                        self.finish(c, Move::Done);
                    }
                    Leftover::Take => self.take_file(c, 0)?,
                }
                // Reported, applied, rejected or waiting for a retry: it no longer
                // counts as interrupted (the apply itself clears it too).
                self.engine.store().forget_leftover(&name)?;
            }
            // The rest had left `processing/` (moved to `done/` before the line was
            // logged): reported all the same.
            for r in &unreported {
                self.engine.report_file(r);
            }
        }
        for s in std::mem::take(&mut self.stuck) {
            match s.next {
                Pending::Read { attempts } => self.take_file(s.claim, attempts)?,
                Pending::Move(m) => self.finish(s.claim, m),
            }
        }
        for _ in 0..MAX_FILES_PER_PASS {
            // A file that cannot be finished holds new claims back: they would get
            // stuck the same way, and this keeps `stuck` bounded. A stop that came
            // during a file claims no other.
            if !self.stuck.is_empty() || self.stop_requested {
                return Ok(());
            }
            match self.spool.claim_next() {
                Ok(Some(c)) => self.take_file(c, 0)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::error!(event = "spool_error", error = %e);
                    if self.repair_spool() {
                        // The layout is whole again: claim at once.
                        let _ = self.tx.try_send(Msg::Spool);
                    }
                    return Ok(());
                }
            }
        }
        // More files wait: come back at once.
        let _ = self.tx.try_send(Msg::Spool);
        Ok(())
    }

    /// Recreates spool directories that vanished, logging `spool_error` for each (and
    /// watching a new `incoming/`). True when it created any.
    fn repair_spool(&mut self) -> bool {
        let created = match self.spool.repair() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(event = "spool_error", error = %e);
                return false;
            }
        };
        for path in &created {
            tracing::error!(
                event = "spool_error",
                path = %path.display(),
                error = "the spool directory was missing; recreated"
            );
        }
        // A watch follows the directory, not its name: a new `incoming/` (ours or
        // anyone's) needs a new one.
        let incoming = incoming_id(&self.spool);
        if incoming.is_some() && incoming != self.watched {
            self.watcher = watch_spool(&self.spool, self.tx.clone());
            self.watched = incoming;
        }
        !created.is_empty()
    }

    fn take_file(&mut self, c: Claimed, attempts: u32) -> Result<(), Fatal> {
        let now = self.clock.now();
        // A JSON Lines file is read a chunk at a time while it applies; a `.json`
        // document is parsed whole, so it is read whole.
        let read = if crate::contract::jobfile::is_document(&c.name) {
            self.spool.read(&c).map(Source::Bytes)
        } else {
            self.spool.scan(&c).map(Source::Scanned)
        };
        let source = match read {
            Ok(s) => s,
            Err(ReadError::Io(e)) => {
                self.read_failed(c, attempts, e);
                return Ok(());
            }
            Err(e) => {
                self.reject(c, 0, "file", &e.to_string());
                return Ok(());
            }
        };
        let outcome = match self.engine.begin_file(&c.name, source, now)? {
            Begin::Finished(o) => o,
            Begin::Started(mut job) => loop {
                if let Some(o) = self.engine.file_step(&mut job, self.clock.now())? {
                    break o;
                }
                self.between_chunks()?;
                // A stop while the file is only staged drops it: the biggest file takes
                // longer to apply than systemd waits for a stop, and a kill there would
                // count towards quarantining a valid file. Once committed, it is finished.
                if self.stop_requested && self.engine.abandon_file(&mut job)? {
                    let (done, total) = job.progress();
                    tracing::info!(
                        event = "file_interrupted",
                        file = %c.name,
                        done,
                        total,
                        "stopping: nothing of the file is applied; it stays in processing/ and is applied at the next start"
                    );
                    return Ok(());
                }
            },
        };
        match outcome {
            ApplyOutcome::Applied(_) => self.finish(c, Move::Done),
            ApplyOutcome::AlreadyApplied => {
                // SPEC 6: the same name and content were applied before.
                tracing::info!(event = "file_duplicate", file = %c.name);
                self.finish(c, Move::Done);
            }
            ApplyOutcome::Rejected(r) => {
                // The engine logged `file_rejected`; move the file beside its reason.
                let text = format!("{}:{}: field `{}`: {}", c.name, r.line, r.field, r.reason);
                self.finish(c, Move::Reject(text));
            }
        }
        Ok(())
    }

    /// Moves a poison file to `rejected/` with an `.error` saying why (SPEC 6).
    fn quarantine(&mut self, c: Claimed, starts: u32) -> Result<(), Fatal> {
        let reason = format!(
            "not applied: the worker stopped while applying this file at {starts} start-ups in a \
             row (a crash, a kill, or running out of memory), so it is not tried again; \
             nothing of it was applied. Split it into smaller files, or give the worker more \
             memory, and drop it into incoming/ again"
        );
        tracing::error!(event = "file_quarantined", file = %c.name, starts, error = %reason);
        self.engine.store().forget_leftover(&c.name)?;
        let text = format!("{}:0: field `file`: {reason}", c.name);
        self.finish(c, Move::Reject(text));
        Ok(())
    }

    /// A claimed file that could not be read: gone (nothing left to do), tried again
    /// at the next pass when the error may pass, else rejected with the error, so
    /// that neither it nor a namesake in `incoming/` waits forever.
    fn read_failed(&mut self, c: Claimed, attempts: u32, e: std::io::Error) {
        if e.kind() == std::io::ErrorKind::NotFound && !c.path.exists() {
            tracing::error!(
                event = "spool_error",
                file = %c.name,
                path = %c.path.display(),
                error = "the claimed file vanished before it was read"
            );
            self.repair_spool();
            return;
        }
        let attempts = attempts + 1;
        if may_pass(&e) && attempts < MAX_READ_ATTEMPTS {
            tracing::error!(event = "spool_error", file = %c.name, attempts, error = %e);
            self.stuck.push(Stuck {
                claim: c,
                next: Pending::Read { attempts },
            });
            return;
        }
        let reason = ReadError::Io(e).to_string();
        self.reject(c, 0, "file", &reason);
    }

    fn reject(&mut self, c: Claimed, line: usize, field: &str, reason: &str) {
        let text = format!("{}:{line}: field `{field}`: {reason}", c.name);
        log::event(&crate::engine::Event::FileRejected {
            file: c.name.clone(),
            line,
            field: field.to_string(),
            reason: reason.to_string(),
        });
        self.finish(c, Move::Reject(text));
    }

    /// Moves a claimed file to `done/` or `rejected/`. A failure is logged; if a spool
    /// directory was missing it is recreated and the move tried once more; a file
    /// still in `processing/` after that waits in `stuck` for the next pass.
    fn finish(&mut self, c: Claimed, m: Move) {
        for retry in [false, true] {
            let result = match &m {
                Move::Done => self.spool.done(&c),
                Move::Reject(text) => self.spool.reject(&c, text),
            };
            let Err(e) = result else { return };
            tracing::error!(event = "spool_error", file = %c.name, error = %e);
            if retry || !self.repair_spool() {
                break;
            }
        }
        if c.path.symlink_metadata().is_ok() {
            self.stuck.push(Stuck {
                claim: c,
                next: Pending::Move(m),
            });
        } else {
            tracing::error!(
                event = "spool_error",
                file = %c.name,
                path = %c.path.display(),
                error = "the claimed file vanished from processing/"
            );
        }
    }

    /// Answer an operator request between ticks: the engine thread owns the store, so
    /// a pause is in force before the next dispatch (in-flight calls finish).
    fn admin(&mut self, call: admin::server::Call) -> Result<(), Fatal> {
        // A request reads and changes what held answers change: they go first.
        self.engine.settle_answers()?;
        let now = self.clock.now();
        let ctx = self.admin_context();
        let mut events = Vec::new();
        let reply = admin::ops::execute(self.engine.store(), &call.request, now, &ctx, &mut events)?;
        for e in &events {
            log::event(e);
        }
        if call.request.mutates() {
            self.engine.operator_changed(now)?;
        }
        // The client may be gone: its loss, not the worker's.
        let _ = call.reply.send(reply);
        Ok(())
    }

    fn admin_context(&self) -> admin::ops::Context {
        admin::ops::Context {
            upstream: self.engine.upstream_status(),
            min_gap_s: self.config.pacing.min_gap_s,
            cluster: self
                .config
                .cluster
                .as_ref()
                .and_then(|c| self.engine.cluster_status(c.node_name())),
        }
    }

    /// SIGHUP: re-read the configuration; an invalid one is logged and ignored. A cap
    /// it raises takes effect at once (`Engine::set_settings`).
    fn reload(&mut self) -> Result<(), Fatal> {
        let Some(path) = self.config_path.clone() else {
            tracing::info!(
                event = "config_reload_skipped",
                reason = "running on built-in defaults"
            );
            return Ok(());
        };
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(event = "config_rejected", error = %e);
                return Ok(());
            }
        };
        let upstream = {
            let _guard = self.runtime.enter();
            build_upstream(&new, &self.clock)
        };
        let (upstream, events) = match upstream {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(event = "config_rejected", error = %e);
                return Ok(());
            }
        };
        // A new file size bound takes a new handle on the same spool (the directory
        // itself only changes with a restart).
        let spool = if new.spool.max_file_bytes == self.config.spool.max_file_bytes {
            None
        } else {
            match Spool::open(&self.config.spool.dir, new.spool.max_file_bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(event = "config_rejected", error = %e, spool = %self.config.spool.dir.display());
                    return Ok(());
                }
            }
        };
        for (key, changed) in [
            ("store.path", new.store.path != self.config.store.path),
            ("store.cache_mb", new.store.cache_mb != self.config.store.cache_mb),
            ("spool.dir", new.spool.dir != self.config.spool.dir),
            ("log.format", new.log.format != self.config.log.format),
            ("metrics.listen", new.metrics != self.config.metrics),
            ("clock", new.clock != self.config.clock),
            ("admin.socket", new.admin != self.config.admin),
        ] {
            if changed {
                tracing::warn!(event = "config_restart_needed", key);
            }
        }
        if let Some(spool) = spool {
            self.spool = spool;
        }
        // `spool.rescan_s` and `status.every_s` are read from `self.config` every turn.
        self.upstream = upstream;
        self.engine
            .set_settings(Settings::from_config(&new), self.clock.now())?;
        self.config.upstream.events_every_s = new.upstream.events_every_s;
        self.set_events(events);
        let cfg = self.engine.config_mut();
        cfg.min_gap_s = new.pacing.min_gap_s;
        cfg.max_gap_s = new.pacing.max_gap_s;
        self.engine
            .set_breaker(new.upstream.breaker_failures, new.upstream.breaker_max_s);
        // Restart-only keys keep the values the worker runs with, so the next reload
        // compares the file with what runs, not with the last file read.
        let mut new = new;
        new.store.path = self.config.store.path.clone();
        new.store.cache_mb = self.config.store.cache_mb;
        new.spool.dir = self.config.spool.dir.clone();
        new.log.format = self.config.log.format;
        new.metrics = self.config.metrics;
        new.clock = self.config.clock;
        new.admin = self.config.admin.clone();
        self.config = new;
        tracing::info!(event = "config_reloaded", path = %path.display());
        Ok(())
    }

    /// Rewrite the status file. A store read that fails is a store error (SPEC P5:
    /// exit 74); only writing the file itself may fail with a logged `status_failed`.
    fn write_status(&self) -> Result<(), StoreError> {
        let report = self.status_report()?;
        let now = report.now;
        let doc = serde_json::json!({
            "worker": {
                "pid": std::process::id(),
                "uptime_s": self.started.elapsed().as_secs(),
                "inflight": self.engine.inflight(),
                "clock": now,
            },
            "status": report,
        });
        let count = |state: &str| report.states.get(state).copied().unwrap_or(0);
        let line = format!(
            "upstream {}; {} accounts; actions: {} queued, {} parked, {} inflight, {} sent, {} unknown",
            report.upstream.state,
            report.accounts.len(),
            count("queued"),
            count("parked"),
            count("inflight"),
            count("sent"),
            count("unknown")
        );
        notify(&[sd_notify::NotifyState::Status(&line)]);
        if let Err(e) = write_atomic(&self.config.status.path, doc.to_string().as_bytes()) {
            tracing::warn!(event = "status_failed", path = %self.config.status.path.display(), error = %e);
        }
        self.publish_metrics(report)
    }

    /// The status of SPEC §8 as the running worker sees it.
    fn status_report(&self) -> Result<crate::store::StatusReport, StoreError> {
        admin::ops::status_report(
            self.engine.store(),
            self.clock.now(),
            &self.admin_context(),
            STATUS_FILE_SCAN_MAX,
        )
    }

    /// Hand a new snapshot to the metrics listener (with `metrics.listen` set).
    fn publish_metrics(&self, report: crate::store::StatusReport) -> Result<(), StoreError> {
        match &self.metrics {
            Some(m) => m.publish(report, self.engine.store()),
            None => Ok(()),
        }
    }
}

/// Whether a read error may pass by itself (so the read is worth trying again).
fn may_pass(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::ENOBUFS
                | libc::EINTR
                | libc::EAGAIN
                | libc::EIO
        )
    )
}

/// The status file's mode, whatever the umask: it names accounts and campaigns.
pub const STATUS_FILE_MODE: u32 = 0o640;

/// Write a file by writing a temporary beside it and renaming it over the old one; the
/// file gets `STATUS_FILE_MODE` whatever the umask.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(STATUS_FILE_MODE)
        .open(&tmp)?;
    // The umask may have taken bits away, and a leftover temporary keeps its old mode.
    f.set_permissions(std::fs::Permissions::from_mode(STATUS_FILE_MODE))?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}
