//! Heap the worker gives back to the system. glibc keeps the memory that a big batch
//! freed (a backlog walked and parked, a big file applied, every account's day turned)
//! in its arenas, and the resident size stays at the batch's peak: after walking a
//! million queued actions about 100 MB of it was free but held. `malloc_trim` returns
//! those pages; the engine calls it once enough work has churned the heap.

/// Units of work (actions reserved, parked or applied; day turns) between two trims.
pub const TRIM_AFTER: u64 = 4096;

/// Counts the work since the last trim; decides when the next one is due (pure).
#[derive(Debug, Default)]
pub struct Churn {
    since_trim: u64,
}

impl Churn {
    /// Note `n` units of work.
    pub fn add(&mut self, n: u64) {
        self.since_trim = self.since_trim.saturating_add(n);
    }

    /// Whether enough work churned the heap since the last trim; resets the count.
    pub fn trim_due(&mut self) -> bool {
        if self.since_trim < TRIM_AFTER {
            return false;
        }
        self.since_trim = 0;
        true
    }
}

/// Give the heap's free pages back to the system (glibc `malloc_trim`; elsewhere
/// nothing).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions: it only releases free memory, under
    // the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_after_enough_work_and_not_again_until_more() {
        let mut c = Churn::default();
        c.add(TRIM_AFTER - 1);
        assert!(!c.trim_due(), "not yet");
        c.add(1);
        assert!(c.trim_due(), "due at the threshold");
        assert!(!c.trim_due(), "the count restarts");
        c.add(u64::MAX);
        c.add(u64::MAX);
        assert!(c.trim_due(), "a huge count saturates and is due");
    }
}
