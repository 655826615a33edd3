//! The in-process engine: one process drives N devices, one thread per device
//! (`epa train --devices cuda:0,cuda:1,…`).
//!
//! Host-side collectives (metrics, flags, the reference cache) meet in shared memory. The gradient
//! all-reduce goes device to device through burn's collectives — NCCL on CUDA (burn 0.22's
//! `DistributedContext`, cubecl-cuda's NCCL, loaded at run time) — when every device is a CUDA GPU;
//! otherwise (CPU, wgpu: burn has no collectives there) through host memory, summed in rank order
//! so every rank gets the same bits.
//!
//! A rank that fails poisons the group: the others, waiting in a collective or arriving at one,
//! panic with "another rank failed" instead of waiting forever, and the caller reports the first
//! error.

use std::sync::{Arc, Condvar, Mutex};

use burn::tensor::{Device, Tensor};

use super::Collective;

#[derive(Clone)]
enum Payload {
    Bytes(Vec<u8>),
    Floats(Vec<f32>),
}

#[derive(Default)]
struct Round {
    generation: u64,
    arrived: usize,
    slots: Vec<Option<Payload>>,
    result: Arc<Vec<Payload>>,
    poisoned: bool,
}

/// What the ranks of one group share.
pub struct Group {
    size: usize,
    round: Mutex<Round>,
    cv: Condvar,
    /// The devices, when every one is a CUDA GPU: the gradients go through burn's NCCL all-reduce.
    nccl: Option<Vec<Device>>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group {{ size: {}, nccl: {} }}", self.size, self.nccl.is_some())
    }
}

impl Group {
    /// A group of `size` ranks exchanging through host memory.
    pub fn new(size: usize) -> Arc<Group> {
        Self::build(size, None)
    }

    /// A group of one rank per device of `devices` (with gradients over NCCL when `nccl` and the
    /// devices are CUDA GPUs).
    pub fn for_devices(devices: Vec<Device>, nccl: bool) -> Arc<Group> {
        let n = devices.len();
        Self::build(n, nccl.then_some(devices))
    }

    fn build(size: usize, nccl: Option<Vec<Device>>) -> Arc<Group> {
        let round = Round { slots: vec![None; size], ..Default::default() };
        Arc::new(Group { size, round: Mutex::new(round), cv: Condvar::new(), nccl })
    }

    /// Rank `rank`'s handle.
    pub fn member(self: &Arc<Group>, rank: usize) -> Member {
        assert!(rank < self.size);
        Member { group: self.clone(), rank }
    }

    /// Marks the group failed: every rank waiting in (or coming to) a collective panics.
    pub fn poison(&self) {
        let mut r = self.round.lock().unwrap_or_else(|e| e.into_inner());
        r.poisoned = true;
        self.cv.notify_all();
    }

    /// Every rank's payload, in rank order, once all have arrived.
    fn exchange(&self, rank: usize, p: Payload) -> Arc<Vec<Payload>> {
        let mut r = self.round.lock().unwrap_or_else(|e| e.into_inner());
        if r.poisoned {
            panic!("another rank failed");
        }
        r.slots[rank] = Some(p);
        r.arrived += 1;
        if r.arrived == self.size {
            r.result = Arc::new(r.slots.iter_mut().map(|s| s.take().expect("every rank arrived")).collect());
            r.arrived = 0;
            r.generation += 1;
            self.cv.notify_all();
            return r.result.clone();
        }
        let g = r.generation;
        while r.generation == g && !r.poisoned {
            r = self.cv.wait(r).unwrap_or_else(|e| e.into_inner());
        }
        if r.generation == g {
            panic!("another rank failed");
        }
        r.result.clone()
    }
}

/// One rank of a [`Group`].
#[derive(Debug, Clone)]
pub struct Member {
    group: Arc<Group>,
    rank: usize,
}

impl Member {
    /// The group this rank belongs to.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }
}

impl Collective for Member {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.group.size
    }
    fn engine(&self) -> &'static str {
        if self.group.nccl.is_some() { "threads+nccl" } else { "threads" }
    }
    fn all_reduce_sum(&self, values: &mut [f32]) {
        let all = self.group.exchange(self.rank, Payload::Floats(values.to_vec()));
        values.fill(0.0);
        for p in all.iter() {
            let Payload::Floats(v) = p else { unreachable!("every rank calls the same collective") };
            for (a, b) in values.iter_mut().zip(v) {
                *a += b;
            }
        }
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let all = self.group.exchange(self.rank, Payload::Bytes(bytes.to_vec()));
        all.iter()
            .map(|p| match p {
                Payload::Bytes(b) => b.clone(),
                Payload::Floats(_) => unreachable!("every rank calls the same collective"),
            })
            .collect()
    }
    fn all_reduce_tensor(&self, t: Tensor<1>) -> Tensor<1> {
        match &self.group.nccl {
            Some(devices) => {
                use burn::tensor::distributed::{ReduceOperation, all_reduce};
                all_reduce(t, ReduceOperation::Sum, devices.clone()).resolve()
            }
            None => super::host_all_reduce(self, t),
        }
    }
    fn barrier(&self) {
        self.group.exchange(self.rank, Payload::Bytes(Vec::new()));
    }
    fn is_trivial(&self) -> bool {
        // A one-GPU NCCL group still runs its all-reduce: that is how a single GPU checks the path.
        self.group.size == 1 && self.group.nccl.is_none()
    }
    fn abort(&self, code: i32) -> ! {
        self.group.poison();
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_exchange_in_rank_order_and_sum_identically() {
        let g = Group::new(3);
        let out: Vec<(Vec<Vec<u8>>, Vec<f32>)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|r| {
                    let m = g.member(r);
                    s.spawn(move || {
                        let gathered = m.all_gather_bytes(&[r as u8; 2]);
                        m.barrier();
                        let mut v = vec![r as f32, 1.0];
                        m.all_reduce_sum(&mut v);
                        (gathered, v)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (gathered, sum) in out {
            assert_eq!(gathered, vec![vec![0, 0], vec![1, 1], vec![2, 2]]);
            assert_eq!(sum, vec![3.0, 3.0]);
        }
    }

    #[test]
    fn a_failed_rank_releases_the_others_instead_of_leaving_them_waiting() {
        let g = Group::new(2);
        let waiting = g.member(0);
        let r = std::thread::scope(|s| {
            let h = s.spawn(move || std::panic::catch_unwind(|| waiting.barrier()));
            std::thread::sleep(std::time::Duration::from_millis(50));
            g.poison(); // rank 1 failed before reaching the barrier
            h.join().unwrap()
        });
        let e = r.expect_err("rank 0 is released with a panic");
        assert_eq!(e.downcast_ref::<&str>(), Some(&"another rank failed"));
    }
}
