//! Fault injection for the crash-safety tests: `EPA_FAULT_AT=N` aborts the process (as a `SIGKILL`
//! would: no destructors, no flushing) at the N-th file-system step of checkpointing and metrics
//! writing. Every such step calls [`point`]; unset (the normal case) it costs one atomic increment.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(0);

fn target() -> Option<usize> {
    static T: OnceLock<Option<usize>> = OnceLock::new();
    *T.get_or_init(|| std::env::var("EPA_FAULT_AT").ok().and_then(|v| v.parse().ok()))
}

/// Marks a file-system step done (`what` names it); aborts here when it is the N-th one.
pub fn point(what: &str) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if target() == Some(n) {
        eprintln!("EPA_FAULT_AT={n}: aborting after {what}");
        std::process::abort();
    }
}

/// `EPA_FAULT_KILL=R:N`: rank R of a data-parallel run kills itself with `SIGKILL` (`kill -9`)
/// once its N-th optimiser step is done — for the test of a rank dying mid-run.
pub fn kill_after_step(rank: usize, step: usize) {
    static T: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    let target = *T.get_or_init(|| {
        let v = std::env::var("EPA_FAULT_KILL").ok()?;
        let (r, n) = v.split_once(':')?;
        Some((r.parse().ok()?, n.parse().ok()?))
    });
    if target == Some((rank, step)) {
        eprintln!("EPA_FAULT_KILL: rank {rank} kills itself after step {step}");
        let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
