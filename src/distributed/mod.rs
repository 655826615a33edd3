//! Data-parallel training: the [`Collective`] a run's ranks talk through, and how a run finds out
//! whether it is one.
//!
//! epa's data parallelism is PyTorch DDP's: every rank holds the whole model, reads its own shard of
//! every batch, and the gradients are summed over ranks before the optimiser step, so every rank
//! takes the same step. The training step itself does not change; [`sync`] holds the few places
//! where ranks exchange anything (gradients, metrics, the reference cache, a start-up check).
//!
//! Engines:
//! - [`Single`]: one process, nothing to exchange (the default).
//! - MPI (`--features mpi`, [`mpi::Mpi`]): `mpirun -np N epa train …`, one process per rank, on
//!   CPUs and nodes, and on GPUs with the gradients going through host memory.
//! - Threads ([`threads::Member`]): `epa train --devices cuda:0,cuda:1`, one process driving N
//!   devices, the gradients summed GPU to GPU by burn 0.22's collectives (NCCL) when every device
//!   is a CUDA GPU. burn has collectives only for its cubecl backends, not for the CPU backend:
//!   elsewhere the threads meet in host memory.

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod sync;
pub mod threads;

use anyhow::{Result, bail};
use burn::tensor::Tensor;
use std::sync::Arc;

/// What data-parallel training needs from a communication library. Every rank calls the same
/// methods in the same order (the collectives block until all ranks have called them).
pub trait Collective: std::fmt::Debug + Send + Sync {
    /// This process's rank, 0-based; rank 0 writes every file of a run.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// The engine's name (`single`, `mpi`), for logs and the run summary.
    fn engine(&self) -> &'static str;
    /// Element-wise sum over ranks, in place: afterwards every rank holds the same sums.
    fn all_reduce_sum(&self, values: &mut [f32]);
    /// Every rank's `bytes`, in rank order, on every rank.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// Element-wise sum over ranks of a tensor on this rank's device (the flat gradients). By
    /// default through host memory ([`host_all_reduce`]); an engine with device-to-device
    /// collectives (NCCL) overrides it.
    fn all_reduce_tensor(&self, t: Tensor<1>) -> Tensor<1> {
        host_all_reduce(self, t)
    }
    /// Waits until every rank has arrived.
    fn barrier(&self);
    /// Whether the collectives have nothing to do (one rank): the gradient sync is then skipped.
    fn is_trivial(&self) -> bool {
        self.world_size() == 1
    }
    /// Ends the whole job (every rank), with `code` as the exit status: what a rank does after an
    /// error, so that the others are not left waiting in a collective.
    fn abort(&self, code: i32) -> !;
}

/// [`Collective::all_reduce_tensor`] through host memory: one device→host copy, the engine's
/// [`Collective::all_reduce_sum`], one host→device copy.
pub fn host_all_reduce<C: Collective + ?Sized>(comm: &C, t: Tensor<1>) -> Tensor<1> {
    let device = t.device();
    let mut v = crate::model::host_f32(t);
    comm.all_reduce_sum(&mut v);
    let n = v.len();
    Tensor::from_data(burn::tensor::TensorData::new(v, [n]), &device)
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, _values: &mut [f32]) {}
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The rank's part of every batch: a contiguous slice of the global batch's prompts. With the
/// global batch `P × world` prompts every rank gets P; a short last batch gives the first ranks
/// one more than the last (possibly none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
}

impl Shard {
    /// The whole batch (one rank).
    pub const ALL: Shard = Shard { rank: 0, world: 1 };

    /// This process's shard under `comm`.
    pub fn of(comm: &dyn Collective) -> Shard {
        Shard { rank: comm.rank(), world: comm.world_size() }
    }

    /// The index range of this rank's items among `n`.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let (q, r) = (n / self.world, n % self.world);
        let start = self.rank * q + self.rank.min(r);
        start..start + q + usize::from(self.rank < r)
    }

    /// This rank's part of `batch`.
    pub fn take(&self, mut batch: crate::data::Batch) -> crate::data::Batch {
        if self.world > 1 {
            let range = self.range(batch.groups.len());
            batch.groups = batch.groups.drain(range).collect();
        }
        batch
    }
}

/// How this process was launched, from the environment the launcher sets:
/// - under `mpirun` (Open MPI's `OMPI_COMM_WORLD_SIZE`, or `PMI_SIZE` of MPICH and Slurm): the MPI
///   engine (an error when this binary was built without the `mpi` feature and there is more than
///   one rank);
/// - torchrun-style variables (`WORLD_SIZE` > 1): an error saying to launch with `mpirun`;
/// - otherwise [`Single`].
pub fn from_env() -> Result<Arc<dyn Collective>> {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = var("OMPI_COMM_WORLD_SIZE").or_else(|| var("PMI_SIZE")) {
        #[cfg(feature = "mpi")]
        {
            let _ = n;
            return Ok(Arc::new(mpi::Mpi::init()?));
        }
        #[cfg(not(feature = "mpi"))]
        if n > 1 {
            bail!(
                "launched by mpirun with {n} processes, but this epa was built without the `mpi` feature: \
                 rebuild with `cargo build --release --features mpi` (needs an MPI library, e.g. Debian's libopenmpi-dev, and libclang)"
            );
        }
    }
    if let Some(n) = var("WORLD_SIZE").filter(|&n| n > 1) {
        bail!(
            "WORLD_SIZE={n} (a torchrun-style launch): epa's data parallelism runs on MPI; launch with \
             `mpirun -np {n} epa train …` (a binary built with `--features mpi`), on GPUs too"
        );
    }
    Ok(Arc::new(Single))
}

/// This rank's index among the ranks on its node, as the launcher sets it (Open MPI's
/// `OMPI_COMM_WORLD_LOCAL_RANK`, MPICH's `MPI_LOCALRANKID`, Slurm's `SLURM_LOCALID`).
pub fn local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
}

/// The device of a rank: one GPU per rank, as torchrun's `cuda:LOCAL_RANK`. `cuda:N` on the node's
/// local rank r is `cuda:N+r` (so `cuda` gives ranks 0, 1, … of a node GPUs 0, 1, …); the CPU and
/// wgpu are shared.
pub fn rank_device(spec: crate::device::DeviceSpec, local_rank: usize) -> crate::device::DeviceSpec {
    match spec {
        crate::device::DeviceSpec::Cuda(i) => crate::device::DeviceSpec::Cuda(i + local_rank),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use crate::device::DeviceSpec;

    #[test]
    fn each_local_rank_gets_its_own_gpu() {
        assert_eq!(rank_device(DeviceSpec::Cuda(0), 3), DeviceSpec::Cuda(3));
        assert_eq!(rank_device(DeviceSpec::Cuda(2), 1), DeviceSpec::Cuda(3));
        assert_eq!(rank_device(DeviceSpec::Cpu, 1), DeviceSpec::Cpu);
    }

    use super::*;

    #[test]
    fn shards_cover_every_prompt_once_in_order() {
        for n in 0..12 {
            for world in 1..5 {
                let all: Vec<usize> = (0..world).flat_map(|rank| Shard { rank, world }.range(n)).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} world {world}");
                let sizes: Vec<usize> = (0..world).map(|rank| Shard { rank, world }.range(n).len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(Shard { rank: 1, world: 2 }.range(8), 4..8);
    }
}
