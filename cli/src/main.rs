//! `fastrpc`: serve, call and benchmark fastrpc servers from the command line.
//!
//! * `fastrpc serve`: a server that echoes or answers a fixed reply (or, with `--raw`, the
//!   raw-TCP peer of the bench's ceiling).
//! * `fastrpc call`: one call, the response written raw to stdout, an exit code per error kind.
//! * `fastrpc bench`: throughput, latency percentiles, wire bytes, batching and CPU, against
//!   the raw ceiling with `--compare-raw`.

mod bench;
mod call;
mod opts;
mod raw;
mod raw_tasks;
mod report;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fastrpc",
    version,
    about = "Serve, call and benchmark fastrpc (valyala/fastrpc + tlv wire protocol)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a server; prints `listening ADDR` first, stops on SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Make one call and write the response to stdout.
    Call(call::CallArgs),
    /// Measure calls/s, latency, wire bytes and CPU (optionally against the raw ceiling).
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors; usage errors exit 1 (clap's own is 2,
            // which `fastrpc call` uses for timeouts).
            let code = if e.use_stderr() { opts::EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.cmd {
        Cmd::Serve(a) => serve::run(a),
        Cmd::Call(a) => call::run(a),
        Cmd::Bench(a) => bench::run(a),
    };
    std::process::exit(code);
}
