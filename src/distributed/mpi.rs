//! The MPI engine (rsmpi over the system's MPI library): `mpirun -np N epa train …`.
//!
//! Only the thread that initialised MPI calls it (`MPI_THREAD_SINGLE` is asked for: burn's worker
//! threads never touch MPI). MPI is finalised when the [`Mpi`] value is dropped, at the end of the
//! command; after an error a rank calls [`Collective::abort`] so the other ranks do not wait forever.

use anyhow::{Context, Result};
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Collective;

/// Elements per `MPI_Allreduce` call: MPI counts are 32-bit, and a model's gradients can be larger.
const CHUNK: usize = 1 << 26;

/// The MPI world communicator; finalises MPI when dropped.
pub struct Mpi {
    _universe: mpi::environment::Universe,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl Mpi {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<Mpi> {
        let universe = mpi::initialize().context("MPI is already initialised in this process")?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Mpi { _universe: universe, rank, size })
    }

    fn world(&self) -> SimpleCommunicator {
        SimpleCommunicator::world()
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn engine(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce_sum(&self, values: &mut [f32]) {
        let world = self.world();
        let mut out = vec![0f32; values.len().min(CHUNK)];
        for chunk in values.chunks_mut(CHUNK) {
            let out = &mut out[..chunk.len()];
            world.all_reduce_into(&chunk[..], out, mpi::collective::SystemOperation::sum());
            chunk.copy_from_slice(out);
        }
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let world = self.world();
        let mut counts = vec![0 as mpi::Count; self.size];
        world.all_gather_into(&(bytes.len() as mpi::Count), &mut counts[..]);
        let displs: Vec<mpi::Count> = counts
            .iter()
            .scan(0, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; counts.iter().map(|&c| c as usize).sum()];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            world.all_gather_varcount_into(bytes, &mut part);
        }
        counts.iter().zip(&displs).map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec()).collect()
    }
    fn barrier(&self) {
        self.world().barrier();
    }
    fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }
}
