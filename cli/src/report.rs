//! The figures of one bench run and how they are printed: a few aligned lines of text, or
//! one JSON object.

use fastrpc::ErrorKind;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// What one run (raw or engine) measured.
pub struct Report {
    /// "engine" or "raw".
    pub mode: &'static str,
    pub nowait: bool,
    /// Where the server was: "inproc", "child pid N", or "external".
    pub server: String,
    pub compress: String,
    pub tls: bool,
    pub connections: usize,
    pub concurrency: usize,
    pub threads: usize,
    pub name_size: usize,
    pub value_size: usize,
    /// Reply size of a spawned server (None when the server is external).
    pub reply_size: Option<usize>,
    /// Successful calls (fire-and-forget: sends written).
    pub calls: u64,
    /// Failed calls by `ErrorKind::index()`.
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Seconds from the first call to the last outcome.
    pub elapsed: f64,
    /// Merged latencies in nanoseconds; empty for fire-and-forget.
    pub hist: Histogram<u64>,
    /// Request payload (name + value) plus response values, bytes.
    pub payload_bytes: u64,
    pub wire_out: u64,
    pub wire_in: u64,
    pub frames_sent: u64,
    pub flushes: u64,
    /// CPU seconds of this process during the run (user, sys).
    pub cpu: (f64, f64),
    /// CPU seconds of the spawned child server during the run, if there was one.
    pub server_cpu: Option<(f64, f64)>,
    /// The server's own summary line, if it gave one.
    pub server_summary: Option<String>,
    /// With the balancing client: each server's share (empty otherwise).
    pub servers: Vec<ServerShare>,
    /// With `--idle`: the CPU used while connected and idle after the run.
    pub idle: Option<Idle>,
}

/// CPU used while the client stayed connected and idle after a run (`fastrpc bench --idle`).
pub struct Idle {
    /// How long the idle phase lasted.
    pub secs: f64,
    /// This process's CPU (user + sys), percent of one core.
    pub client_pct: f64,
    /// A spawned child server's CPU, percent of one core (None without a child).
    pub server_pct: Option<f64>,
}

/// One server's share of a balanced run.
pub struct ServerShare {
    pub addr: String,
    /// Calls it accepted and errors it had, during the measured run.
    pub calls: u64,
    pub errors: u64,
    /// "up" or "down" at the end of the run.
    pub state: &'static str,
}

impl Report {
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn calls_per_sec(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.calls as f64 / self.elapsed
        } else {
            0.0
        }
    }

    fn mb_per_sec(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.payload_bytes as f64 / 1e6 / self.elapsed
        } else {
            0.0
        }
    }

    fn per_call(&self, n: u64) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            n as f64 / self.calls as f64
        }
    }

    fn frames_per_flush(&self) -> f64 {
        if self.flushes == 0 {
            0.0
        } else {
            self.frames_sent as f64 / self.flushes as f64
        }
    }

    /// Latency at quantile `q` in microseconds (0 without samples).
    fn us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.value_at_quantile(q) as f64 / 1e3
        }
    }

    fn max_us(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.max() as f64 / 1e3
        }
    }

    fn errors_by_kind(&self) -> Vec<(ErrorKind, u64)> {
        ErrorKind::ALL
            .iter()
            .map(|k| (*k, self.errors[k.index()]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The report as a JSON object.
    pub fn json(&self) -> Map<String, Value> {
        let mut errors = Map::new();
        for (k, n) in self.errors_by_kind() {
            errors.insert(k.as_str().replace(' ', "_"), json!(n));
        }
        let v = json!({
            "mode": self.mode,
            "nowait": self.nowait,
            "server": self.server,
            "compress": self.compress,
            "tls": self.tls,
            "connections": self.connections,
            "concurrency": self.concurrency,
            "threads": self.threads,
            "name_size": self.name_size,
            "value_size": self.value_size,
            "reply_size": self.reply_size,
            "calls": self.calls,
            "errors": self.errors_total(),
            "errors_by_kind": errors,
            "elapsed_s": round(self.elapsed, 4),
            "calls_per_sec": round(self.calls_per_sec(), 1),
            "mb_per_sec": round(self.mb_per_sec(), 3),
            "p50_us": round(self.us(0.5), 1),
            "p90_us": round(self.us(0.9), 1),
            "p99_us": round(self.us(0.99), 1),
            "p999_us": round(self.us(0.999), 1),
            "max_us": round(self.max_us(), 1),
            "mean_us": round(if self.hist.is_empty() { 0.0 } else { self.hist.mean() / 1e3 }, 1),
            "wire_bytes_out_per_call": round(self.per_call(self.wire_out), 2),
            "wire_bytes_in_per_call": round(self.per_call(self.wire_in), 2),
            "frames_per_flush": round(self.frames_per_flush(), 2),
            "cpu_user_s": round(self.cpu.0, 3),
            "cpu_sys_s": round(self.cpu.1, 3),
            "server_cpu_user_s": self.server_cpu.map(|c| round(c.0, 3)),
            "server_cpu_sys_s": self.server_cpu.map(|c| round(c.1, 3)),
            "server_summary": self.server_summary,
            "servers": self.servers.iter().map(|b| json!({
                "addr": b.addr,
                "calls": b.calls,
                "errors": b.errors,
                "state": b.state,
            })).collect::<Vec<_>>(),
        });
        match v {
            Value::Object(mut m) => {
                if let Some(i) = &self.idle {
                    m.insert("idle_s".into(), json!(round(i.secs, 3)));
                    m.insert("idle_client_cpu_pct".into(), json!(round(i.client_pct, 3)));
                    m.insert(
                        "idle_server_cpu_pct".into(),
                        json!(i.server_pct.map(|p| round(p, 3))),
                    );
                }
                m
            }
            _ => unreachable!("json! of an object literal"),
        }
    }

    /// The report as text lines.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let what = if self.nowait { "sends" } else { "calls" };
        let tls = if self.tls { ", TLS" } else { "" };
        let compress = if self.mode == "raw" {
            "none (raw TCP: no handshake, compression, TLS or call table)".to_string()
        } else {
            format!("{}{tls}", self.compress)
        };
        s += &format!(
            "{} {}: {} connection(s) x {} in flight, {} worker thread(s), name {} B, value {} \
             B{}, server {}\n",
            self.mode,
            if self.nowait {
                "fire-and-forget"
            } else {
                "calls"
            },
            self.connections,
            self.concurrency,
            self.threads,
            self.name_size,
            self.value_size,
            self.reply_size
                .map(|r| format!(", reply {r} B"))
                .unwrap_or_default(),
            self.server,
        );
        s += &format!("  compression        {compress}\n");
        s += &format!(
            "  {what:<18} {} in {:.2} s, {} errors\n",
            self.calls,
            self.elapsed,
            self.errors_total()
        );
        s += &format!("  {what}/s            {:.0}\n", self.calls_per_sec());
        s += &format!(
            "  MB/s               {:.2} (request + response payload)\n",
            self.mb_per_sec()
        );
        if self.nowait {
            s += "  latency            n/a (fire-and-forget)\n";
        } else {
            s += &format!(
                "  latency (us)       p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
                self.us(0.5),
                self.us(0.9),
                self.us(0.99),
                self.us(0.999),
                self.max_us()
            );
        }
        s += &format!(
            "  wire bytes/{}   out {:.2}  in {:.2}\n",
            &what[..what.len() - 1],
            self.per_call(self.wire_out),
            self.per_call(self.wire_in)
        );
        s += &format!(
            "  frames/flush       {:.2} (client side)\n",
            self.frames_per_flush()
        );
        s += &format!(
            "  CPU (s)            this process: {:.2} user + {:.2} sys",
            self.cpu.0, self.cpu.1
        );
        match self.server_cpu {
            Some((u, sy)) => s += &format!("; server: {u:.2} user + {sy:.2} sys\n"),
            None if self.server == "inproc" => s += " (server included)\n",
            None => s += "\n",
        }
        let errs = self.errors_by_kind();
        if !errs.is_empty() {
            let list: Vec<String> = errs
                .iter()
                .map(|(k, n)| format!("{} {n}", k.as_str()))
                .collect();
            s += &format!("  errors             {}\n", list.join(", "));
        }
        if let Some(i) = &self.idle {
            s += &format!(
                "  idle CPU           {:.3}% of a core (this process){} over {:.1} s connected \
                 and idle\n",
                i.client_pct,
                i.server_pct
                    .map(|p| format!(", server {p:.3}%"))
                    .unwrap_or_default(),
                i.secs
            );
        }
        if let Some(sum) = &self.server_summary {
            s += &format!("  server said        {sum}\n");
        }
        for b in &self.servers {
            s += &format!(
                "  balanced to        {}: {} calls, {} errors, {}\n",
                b.addr, b.calls, b.errors, b.state
            );
        }
        s
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Prints the reports: one run, or raw then engine with their ratio.
pub fn print(raw: Option<&Report>, engine: Option<&Report>, as_json: bool) {
    if as_json {
        let obj = match (raw, engine) {
            (Some(r), Some(e)) => {
                let mut m = e.json();
                let ratio = if r.calls_per_sec() > 0.0 {
                    e.calls_per_sec() / r.calls_per_sec()
                } else {
                    0.0
                };
                m.insert("compare_raw".into(), json!(true));
                m.insert(
                    "raw_calls_per_sec".into(),
                    json!(round(r.calls_per_sec(), 1)),
                );
                m.insert("ratio_to_raw".into(), json!(round(ratio, 4)));
                m.insert("raw".into(), Value::Object(r.json()));
                m
            }
            (Some(r), None) => r.json(),
            (None, Some(e)) => e.json(),
            (None, None) => Map::new(),
        };
        println!("{}", Value::Object(obj));
        return;
    }
    if let Some(r) = raw {
        print!("{}", r.text());
    }
    if let Some(e) = engine {
        print!("{}", e.text());
    }
    if let (Some(r), Some(e)) = (raw, engine) {
        let ratio = if r.calls_per_sec() > 0.0 {
            e.calls_per_sec() / r.calls_per_sec()
        } else {
            0.0
        };
        if e.nowait {
            println!(
                "engine / raw = {ratio:.3} ({:.0} / {:.0} sends/s)",
                e.calls_per_sec(),
                r.calls_per_sec(),
            );
        } else {
            println!(
                "engine / raw = {ratio:.3} ({:.0} / {:.0} calls/s); p50 {:.1} / {:.1} us, p99 \
                 {:.1} / {:.1} us",
                e.calls_per_sec(),
                r.calls_per_sec(),
                e.us(0.5),
                r.us(0.5),
                e.us(0.99),
                r.us(0.99),
            );
        }
    }
}
