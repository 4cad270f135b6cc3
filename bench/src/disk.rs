//! The durable-write baseline: one writer appending a record and calling
//! fdatasync per record, as a server without group commit would.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub struct DiskResult {
    pub records_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

pub fn run(dir: &Path, record_bytes: usize, duration: Duration) -> std::io::Result<DiskResult> {
    let path = dir.join(format!("latchkey-bench-disk-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let record = vec![0x5au8; record_bytes];
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let started = Instant::now();
    let mut records = 0u64;
    while started.elapsed() < duration {
        let begin = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        let _ = histogram.record(begin.elapsed().as_micros() as u64);
        records += 1;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(DiskResult {
        records_per_sec: records as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
    })
}
