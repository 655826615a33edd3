#!/usr/bin/env bash
# Data-parallel training over MPI (the `mpi` feature): lints the MPI engine, then runs the
# 2-rank tests of tests/all/distributed.rs (`mpirun -np 2 epa train …` on the tiny fixture: same
# metrics and weights as one rank with the doubled batch, rank-0-only files, kill -9 of a rank and
# an exact resume, a changed world size refused). Needs Open MPI and libclang (rsmpi's bindings are
# generated at build time); on Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev.
#
#   scripts/test-mpi.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mpirun >/dev/null || { echo "mpirun not found: install Open MPI (Debian: openmpi-bin libopenmpi-dev libclang-dev)"; exit 1; }
# Open MPI refuses to run as root unless told (CI containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo clippy --locked --features mpi --lib --bins --tests -- -D warnings
exec cargo test --locked --features mpi --test all "$@" -- distributed::
