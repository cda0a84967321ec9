//! What a job used, from its own cgroup: the CPU time and the memory peak
//! counted from the job's start, not the worker's (whose warm-up, in spawn
//! mode, is the numpy and pandas imports).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::time::Duration;

use super::worker::{JobCgroup, LimitError};
use super::{counter, read_number, run_blocking, CgroupMode, Knob};
use crate::job::Usage;

/// What a job's usage is measured from, taken as the job starts.
#[derive(Debug)]
pub struct JobMeter {
    /// CPU time the cgroup had used before the job (spawn mode: the
    /// interpreter start and the imports).
    cpu_before: Option<Duration>,
    /// v2: `memory.peak`, reset through this descriptor: the reset holds
    /// only for reads through the same open file.
    peak_file: Option<File>,
}

impl JobCgroup {
    /// Makes the cgroup ready for its job: applies the job's memory limit if
    /// it differs from the cgroup's, resets the memory peak to the current
    /// charge, and reads the CPU time used so far, so that
    /// [`JobCgroup::usage`] measures the job alone.
    pub async fn begin_job(&self, memory_bytes: u64) -> Result<JobMeter, LimitError> {
        let cgroup = self.clone();
        run_blocking(move || cgroup.blocking_begin_job(memory_bytes))
            .await
            .map_err(LimitError::Io)?
    }

    fn blocking_begin_job(&self, memory_bytes: u64) -> Result<JobMeter, LimitError> {
        if memory_bytes != self.memory_bytes {
            self.blocking_set_memory_limit(memory_bytes)?;
        }
        let peak = self.path(Knob::MemoryPeak);
        let peak_file = match self.mode() {
            // Writing 0 resets it to the current usage.
            CgroupMode::V1 => {
                let _ = fs::write(peak, "0");
                None
            }
            // Resettable from kernel 6.12 on; before, the write fails and the
            // peak counts from the cgroup's creation.
            CgroupMode::V2 => OpenOptions::new()
                .read(true)
                .write(true)
                .open(peak)
                .ok()
                .map(|mut file| {
                    let _ = file.write_all(b"reset\n");
                    file
                }),
        };
        Ok(JobMeter {
            cpu_before: self.cpu_used(),
            peak_file,
        })
    }

    /// What the job used since [`JobCgroup::begin_job`]: call once its
    /// processes are stopped, before the cgroup is removed.
    pub async fn usage(&self, mut meter: JobMeter) -> Usage {
        let cgroup = self.clone();
        run_blocking(move || cgroup.blocking_usage(&mut meter))
            .await
            .unwrap_or_default()
    }

    fn blocking_usage(&self, meter: &mut JobMeter) -> Usage {
        let cpu = match (meter.cpu_before, self.cpu_used()) {
            (Some(before), Some(now)) => Some(now.saturating_sub(before)),
            _ => None,
        };
        let peak_memory_bytes = match meter.peak_file.as_mut() {
            Some(file) => {
                let mut text = String::new();
                file.rewind()
                    .and_then(|()| file.read_to_string(&mut text))
                    .ok()
                    .and_then(|_| text.trim().parse().ok())
            }
            None => self.peak_memory(),
        };
        Usage {
            cpu,
            peak_memory_bytes,
        }
    }

    /// CPU time used by every process that was ever in the cgroup.
    fn cpu_used(&self) -> Option<Duration> {
        let file = self.path(Knob::CpuUsage);
        match self.mode() {
            CgroupMode::V1 => read_number(&file).map(Duration::from_nanos),
            CgroupMode::V2 => {
                let stat = fs::read_to_string(file).ok()?;
                counter(&stat, "usage_usec").map(Duration::from_micros)
            }
        }
    }

    /// The highest memory use seen, where the kernel reports it.
    pub fn peak_memory(&self) -> Option<u64> {
        read_number(&self.path(Knob::MemoryPeak))
    }
}
