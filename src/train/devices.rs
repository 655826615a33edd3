//! One process, N devices: `epa train --devices cuda:0,cuda:1,…` runs one [`Trainer`] per device,
//! each on its own thread, as the ranks of a data-parallel run ([`crate::distributed::threads`]).
//! The semantics are the MPI engine's (per-device batch, global batch = per-device × devices,
//! rank 0 writes); only the transport differs.

use anyhow::{Result, anyhow, bail};
use std::sync::Arc;

use crate::device::DeviceSpec;
use crate::distributed::threads::Group;
use crate::model::load::load_model;

use super::{RunOptions, TrainConfig, TrainSummary, Trainer, build_data, run, training_device};

/// Trains `cfg` data-parallel on `devices` (one thread each; the data is read once and shared).
/// With `nccl` (every device a CUDA GPU) the gradients are summed GPU to GPU by burn's NCCL
/// collectives; otherwise through host memory. Returns rank 0's summary, or the first error of any
/// rank (the others stop at their next collective).
pub fn train_on_devices(
    cfg: &TrainConfig,
    opts: &RunOptions,
    devices: &[DeviceSpec],
    nccl: bool,
) -> Result<TrainSummary> {
    if opts.collective.as_ref().is_some_and(|c| c.world_size() > 1) {
        bail!("--devices cannot be combined with an mpirun launch: give each MPI rank one device instead");
    }
    if devices.is_empty() {
        bail!("--devices: no device given");
    }
    if nccl && !devices.iter().all(|d| matches!(d, DeviceSpec::Cuda(_))) {
        bail!("--nccl needs every device of --devices to be a CUDA GPU (cuda:N); got {devices:?}");
    }
    let cfgs: Vec<TrainConfig> = devices
        .iter()
        .map(|d| {
            let mut c = cfg.clone();
            c.model.device = *d;
            c
        })
        .collect();
    let train_devices = cfgs.iter().map(training_device).collect::<Result<Vec<_>>>()?;
    let first = load_model(&cfg.model.path, &train_devices[0])?;
    let (data, eval) = build_data(cfg, &first, true)?;
    let group = Group::for_devices(train_devices.clone(), nccl);
    // NCCL's communicators live as long as this context.
    let _nccl = nccl.then(|| {
        use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
        DistributedContext::init(train_devices.clone(), DistributedConfig { all_reduce_op: ReduceOperation::Sum })
    });
    let mut first = Some(first);
    let results: Vec<Result<TrainSummary>> = std::thread::scope(|s| {
        let handles: Vec<_> = cfgs
            .into_iter()
            .enumerate()
            .map(|(rank, c)| {
                let lm = first.take();
                let (member, device, group) = (group.member(rank), train_devices[rank].clone(), &group);
                let (data, eval) = (&data, eval.as_ref());
                s.spawn(move || {
                    let r = (|| {
                        let lm = match lm {
                            Some(lm) => lm,
                            None => load_model(&c.model.path, &device)?,
                        };
                        let opts = RunOptions { collective: Some(Arc::new(member)), ..opts.clone() };
                        run(Trainer::with_options(c, lm, data, eval, &opts)?, None)
                    })();
                    if r.is_err() {
                        group.poison();
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    let why = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    Err(anyhow!("{why}"))
                })
            })
            .collect()
    });
    let mut first_error = None;
    let mut summary = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(s) if rank == 0 => summary = Some(s),
            Ok(_) => {}
            Err(e) if e.to_string() == "another rank failed" => {}
            Err(e) => {
                first_error.get_or_insert(e.context(format!("device {} (rank {rank})", devices[rank])));
            }
        }
    }
    match (first_error, summary) {
        (Some(e), _) => Err(e),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(anyhow!("rank 0 stopped without a summary")),
    }
}
