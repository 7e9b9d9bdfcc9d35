//! The deterministic fuzz driver (stable Rust, no instrumentation): replays the checked-in
//! corpus of each target, then runs N mutations of it drawn from a fixed seed, with every
//! check of fuzz/src/targets.rs, the per-input time bound and the allocation bound.
//!
//!   replay [--targets a,b,...] [--mutations N] [--seed S] [--max-seconds T] [--max-len L]
//!   replay --target NAME FILE...      run these inputs (a libFuzzer crash, an artifact)
//!
//! Failing inputs are written to fuzz/artifacts/<target>/. Exit status 0 only if nothing
//! failed. The last line reads `fuzz: N passed, M failed` (targets).

use std::time::{Duration, Instant};

use fastrpc_fuzz::{alloc_limit, mutate, set_current, targets};

struct Opts {
    targets: Vec<String>,
    mutations: usize,
    seed: u64,
    max_seconds: f64,
    max_len: usize,
    files: Vec<String>,
    file_target: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: replay [--targets a,b] [--mutations N] [--seed S] [--max-seconds T] [--max-len L]\n       \
         replay --target NAME FILE...\ntargets:"
    );
    for (t, what) in targets::TARGETS {
        eprintln!("  {t:14} {what}");
    }
    std::process::exit(2)
}

fn parse() -> Opts {
    let mut o = Opts {
        targets: targets::TARGETS.iter().map(|t| t.0.to_string()).collect(),
        mutations: 2000,
        seed: 1,
        max_seconds: 60.0,
        max_len: 4096,
        files: Vec::new(),
        file_target: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--targets" => o.targets = val().split(',').map(str::to_string).collect(),
            "--mutations" => o.mutations = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => o.seed = val().parse().unwrap_or_else(|_| usage()),
            "--max-seconds" => o.max_seconds = val().parse().unwrap_or_else(|_| usage()),
            "--max-len" => o.max_len = val().parse().unwrap_or_else(|_| usage()),
            "--target" => o.file_target = Some(val()),
            "-h" | "--help" => usage(),
            f if !f.starts_with('-') => o.files.push(f.to_string()),
            _ => usage(),
        }
    }
    for t in &o.targets {
        if !targets::TARGETS.iter().any(|x| x.0 == t) {
            eprintln!("unknown target {t:?}");
            usage();
        }
    }
    o
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs one input; returns a description of the finding, if any.
fn one(target: &str, data: &[u8]) -> Option<String> {
    set_current(target, data);
    let r = targets::run(target, data);
    let v = alloc_limit::take_violation();
    match (r, v) {
        (Err(e), _) => Some(e),
        (Ok(()), Some(n)) => Some(format!(
            "an allocation of {n} bytes exceeds the bound of {} bytes",
            alloc_limit::limit()
        )),
        (Ok(()), None) => None,
    }
}

fn main() {
    fastrpc_fuzz::install_panic_hook();
    alloc_limit::backtrace_on_violation(std::env::var_os("FUZZ_ALLOC_BACKTRACE").is_some());
    let o = parse();
    if !o.files.is_empty() {
        let t = o.file_target.clone().unwrap_or_else(|| usage());
        let mut bad = 0;
        for f in &o.files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            match one(&t, &data) {
                Some(e) => {
                    bad += 1;
                    println!("{f}: FINDING: {e}");
                }
                None => println!("{f}: ok"),
            }
        }
        std::process::exit(if bad == 0 { 0 } else { 1 });
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // Start the harness (servers, listeners) before taking the descriptor baseline.
    if let Err(e) = targets::check_health() {
        eprintln!("the harness does not start: {e}");
        std::process::exit(1);
    }
    let fds0 = fd_count();
    let (mut passed, mut failed) = (0, 0);
    let t_all = Instant::now();
    for target in &o.targets {
        let t0 = Instant::now();
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        let corpus: Vec<Vec<u8>> = files
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect();
        let mut findings: Vec<String> = Vec::new();
        let mut runs = 0usize;
        let mut corpus_runs = 0usize;
        let mut slowest = (Duration::ZERO, String::new());
        alloc_limit::take_max();
        let note = |what: String, data: &[u8], findings: &mut Vec<String>| {
            let p = fastrpc_fuzz::save_artifact(target, "finding", data);
            findings.push(format!("{what}\n      input saved to {}", p.display()));
        };
        // A hang leaves a connection behind that later health checks would report again:
        // a target stops at its first hang (and after 5 findings of other kinds).
        let stop = |f: &Vec<String>| f.len() >= 5 || f.last().is_some_and(|l| l.contains("hang:"));
        for (p, data) in files.iter().zip(&corpus) {
            if stop(&findings) {
                break;
            }
            let s = Instant::now();
            if let Some(e) = one(target, data) {
                note(format!("corpus {}: {e}", p.display()), data, &mut findings);
            }
            runs += 1;
            corpus_runs += 1;
            if s.elapsed() > slowest.0 {
                slowest = (s.elapsed(), p.file_name().unwrap().to_string_lossy().into());
            }
        }
        let mut rng = mutate::Rng::new(o.seed ^ fastrpc_fuzz::fnv(target.as_bytes()));
        let mut done = 0;
        let mut cut_short = false;
        if !corpus.is_empty() && !stop(&findings) {
            for i in 0..o.mutations {
                if t0.elapsed().as_secs_f64() > o.max_seconds {
                    cut_short = true;
                    break;
                }
                let mut data = corpus[rng.below(corpus.len())].clone();
                mutate::mutate(&mut rng, &mut data, &corpus, o.max_len);
                let s = Instant::now();
                if let Some(e) = one(target, &data) {
                    note(format!("mutation {i}: {e}"), &data, &mut findings);
                    if stop(&findings) {
                        break;
                    }
                }
                runs += 1;
                done += 1;
                if s.elapsed() > slowest.0 {
                    slowest = (s.elapsed(), format!("mutation {i}"));
                }
            }
        }
        if findings.is_empty() {
            if let Err(e) = targets::check_health() {
                findings.push(format!("after the run: {e}"));
            }
        }
        let max = alloc_limit::take_max();
        println!(
            "{target:14} {runs:6} inputs ({corpus_runs} of {} corpus + {done} mutations{}) in \
             {:5.1} s; slowest {:?} ({}); largest allocation {max} bytes; {}",
            corpus.len(),
            if cut_short {
                ", time bound reached"
            } else {
                ""
            },
            t0.elapsed().as_secs_f64(),
            slowest.0,
            slowest.1,
            if findings.is_empty() {
                "ok".to_string()
            } else {
                format!("{} FINDINGS", findings.len())
            }
        );
        for f in &findings {
            println!("    - {f}");
        }
        if findings.is_empty() {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    // Descriptors: every connection of every input is closed again.
    let mut fds = fd_count();
    let t = Instant::now();
    while fds > fds0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        fds = fd_count();
    }
    if fds > fds0 {
        println!("descriptors: {fds0} after start, {fds} at the end: LEAK");
        failed += 1;
    } else {
        println!("descriptors: {fds0} after start, {fds} at the end");
    }
    println!("total {:.1} s", t_all.elapsed().as_secs_f64());
    println!("fuzz: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
