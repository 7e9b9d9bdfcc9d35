//! `fastrpc call`: one call, the response bytes written raw to stdout; or with `--nowait` one
//! fire-and-forget request. Failures print `fastrpc call: <kind>: <message>` and exit with
//! the code of the kind (`opts::EXIT_CODES`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use fastrpc::{Client, CloseMode, Error, ErrorKind};

use crate::opts::{self, client_config, parse_duration, ClientTlsOpts, ProtoOpts, EXIT_CODES};

#[derive(Args, Debug, Clone)]
#[command(after_help = EXIT_CODES)]
pub struct CallArgs {
    /// Server address: host:port or unix:/path.
    #[arg(long, value_name = "ADDR")]
    pub addr: String,
    /// Request name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Request value (default: empty).
    #[arg(long, value_name = "VALUE", conflicts_with = "value_file")]
    pub value: Option<String>,
    /// Read the request value from this file ("-": standard input).
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
    #[command(flatten)]
    pub proto: ProtoOpts,
    #[command(flatten)]
    pub tls: ClientTlsOpts,
    /// Deadline of the call, connecting included (0, 500us, 2ms, 1s).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Fire-and-forget: send the request (id 0, no response wanted), wait until it is
    /// written, then close.
    #[arg(long)]
    pub nowait: bool,
}

pub fn run(args: CallArgs) -> i32 {
    let value = match read_value(&args) {
        Ok(v) => v,
        Err(e) => return opts::fail("call", &e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return opts::fail(
                "call",
                &Error::new(ErrorKind::Io, format!("cannot start the runtime: {e}")),
            )
        }
    };
    let result = rt.block_on(call(&args, &value));
    match result {
        Ok(resp) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&resp).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => opts::fail(
                    "call",
                    &Error::new(
                        ErrorKind::Io,
                        format!("writing the response to stdout: {e}"),
                    ),
                ),
            }
        }
        Err(e) => opts::fail("call", &e),
    }
}

fn read_value(args: &CallArgs) -> Result<Vec<u8>, Error> {
    match (&args.value, &args.value_file) {
        (Some(v), _) => Ok(v.as_bytes().to_vec()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut v)
                .map_err(|e| Error::new(ErrorKind::Io, format!("reading stdin: {e}")))?;
            Ok(v)
        }
        (None, Some(p)) => std::fs::read(p)
            .map_err(|e| Error::new(ErrorKind::Io, format!("reading {}: {e}", p.display()))),
        (None, None) => Ok(Vec::new()),
    }
}

async fn call(args: &CallArgs, value: &[u8]) -> Result<Vec<u8>, Error> {
    let mut cfg = client_config(&args.addr, &args.proto, &args.tls)?;
    cfg.request_timeout = args.timeout;
    let client = Client::new(cfg)?;
    let name = args.name.as_bytes();
    if args.nowait {
        let r = send_and_wait(&client, name, value, args.timeout).await;
        client.close(CloseMode::Drain(Duration::from_secs(1))).await;
        return r.map(|()| Vec::new());
    }
    let r = client.call_timeout(name, value, args.timeout).await;
    client.close(CloseMode::Cancel).await;
    r
}

/// Queues a fire-and-forget request and waits until it has been written to the socket. A
/// failed connect drops queued sends, so the send is retried while the client is not backing
/// off, and the connect error is returned when it is.
async fn send_and_wait(
    client: &Client,
    name: &[u8],
    value: &[u8],
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    client.send(name, value)?;
    let mut failures = 0;
    loop {
        let s = client.stats();
        if s.io.frames_sent >= 1 {
            return Ok(());
        }
        if s.connect_failures > failures {
            failures = s.connect_failures;
            // Backing off: this returns the connect error. Otherwise it queues a retry.
            client.send(name, value)?;
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the fire-and-forget request to {} was not written within {timeout:?}",
                    args_addr(client)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn args_addr(client: &Client) -> &str {
    &client.config().addr
}
