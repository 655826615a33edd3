//! The `epa` command line: the allocator, then [`epa::cli::main`] (every command lives in `src/cli/`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    epa::cli::main()
}
