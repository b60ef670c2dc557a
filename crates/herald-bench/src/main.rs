//! The `herald-bench` command.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = herald_bench::cli::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(herald_bench::cli::run(args))
}
