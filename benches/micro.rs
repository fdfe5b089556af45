//! Criterion micro-benchmarks: the policy decision, one reservation transaction without
//! the fdatasync, and job-file parsing.
//!
//! ```text
//! cargo bench --bench micro               # about 40 s
//! cargo bench --bench micro -- parse      # one group
//! ```

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sendgate::contract::parse_file;
use sendgate::policy::caps::{AccountDay, Budget, CampaignDay, CampaignLimits, Limits};
use sendgate::policy::Kind;
use sendgate::store::{OpenOptions, ReserveResult, Store};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn budget() -> Budget {
    Budget {
        limits: Limits {
            invites: 80,
            messages: 80,
            inmails: 5,
            engagement: 100,
            weekly_invites: Some(200),
            campaign: CampaignLimits {
                invites: 20,
                messages: 20,
                inmails: 20,
            },
        },
        day: AccountDay {
            invites: 12,
            messages: 30,
            inmails: 1,
            engagement: 55,
        },
        week_invites: 90,
        credits: 10,
        campaign_day: CampaignDay {
            invites: 7,
            messages: 3,
            inmails: 0,
        },
    }
}

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy/decide");
    let b = budget();
    for kind in [Kind::Invite, Kind::Message, Kind::Inmail, Kind::ProfileView] {
        g.bench_with_input(BenchmarkId::from_parameter(kind.as_str()), &kind, |bench, &k| {
            bench.iter(|| black_box(&b).decide(black_box(k)))
        });
    }
    g.finish();
}

/// A store (fsync off) and a pool of queued action ids to reserve from.
struct Pool {
    store: Store,
    ids: Vec<String>,
    files: usize,
    dir: std::path::PathBuf,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ACCOUNTS: usize = 100;
const POOL_FILE: usize = 5000;

impl Pool {
    fn new() -> Pool {
        let dir = common::scratch("micro");
        let store = Store::open(
            &dir.join("store"),
            common::settings(false),
            OpenOptions::default(),
        )
        .expect("store opens");
        common::apply_ok(&store, "00-setup.jsonl", &common::setup_text(ACCOUNTS));
        Pool {
            store,
            ids: Vec::new(),
            files: 0,
            dir,
        }
    }

    /// The next queued action, applying another file of them when the pool runs dry.
    fn take(&mut self) -> String {
        if self.ids.is_empty() {
            let prefix = format!("p{}-", self.files);
            let (text, mut ids) = common::actions_file(&prefix, POOL_FILE, ACCOUNTS, "bench");
            common::apply_ok(&self.store, &format!("{:04}.jsonl", self.files + 1), &text);
            self.files += 1;
            ids.reverse();
            self.ids = ids;
        }
        self.ids.pop().expect("pool refilled")
    }
}

fn reserve(c: &mut Criterion) {
    // Built on first use: criterion calls every group function even when a filter
    // (or nextest) selects another benchmark.
    let mut pool: Option<Pool> = None;
    let now = common::bench_now();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    // One `reserve(&[id])`: the transaction, then sled's flush (sync_file_range), but no
    // fdatasync (`Settings { fsync: false }`).
    g.bench_function("reserve_one_no_fdatasync", |b| {
        b.iter_custom(|iters| {
            let pool = pool.get_or_insert_with(Pool::new);
            let ids: Vec<String> = (0..iters).map(|_| pool.take()).collect();
            let t = Instant::now();
            for id in &ids {
                let (r, _) = pool
                    .store
                    .reserve(std::slice::from_ref(id), now)
                    .expect("reserve");
                assert!(matches!(r[0], ReserveResult::Reserved(_)), "{r:?}");
            }
            t.elapsed()
        })
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("jobfile");
    for n in [100usize, 10_000] {
        let (text, _) = common::actions_file("x-", n, 10, "bench");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("parse_jsonl", n), &text, |b, t| {
            b.iter(|| parse_file("f.jsonl", black_box(t.as_bytes())).expect("valid"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decide, reserve, parse
}
criterion_main!(benches);
