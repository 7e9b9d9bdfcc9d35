//! Fuzzing harness for fastrpc: targets that drive live servers and clients (on Unix
//! sockets) with arbitrary bytes, a global allocator that bounds every single allocation, a
//! deterministic mutator for the `replay` driver, and the seed corpus generator.
//!
//! Two drivers use the same targets (`targets::run`):
//!
//! * `replay` (stable, no instrumentation): the checked-in corpus, then N deterministic
//!   mutations per target from a fixed seed. What `scripts/test-robustness.sh` runs.
//! * `fuzz_targets/*` (stable + libFuzzer via libfuzzer-sys, sanitizer-coverage through
//!   RUSTFLAGS): coverage-guided, for longer runs (`fuzz/run-libfuzzer.sh`).
//!
//! See docs/RELIABILITY.md for what is checked and why.

pub mod alloc_limit;
pub mod mutate;
pub mod plan;
pub mod seeds;
pub mod targets;

use std::sync::Mutex;

#[global_allocator]
static ALLOC: alloc_limit::LimitAlloc = alloc_limit::LimitAlloc;

/// The input being run, for the panic hook (replay mode).
static CURRENT: Mutex<Option<(String, Vec<u8>)>> = Mutex::new(None);

/// Where inputs that failed are written (`fuzz/artifacts/<target>/`).
pub fn artifacts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts")
}

/// Saves a failing input; returns its path.
pub fn save_artifact(target: &str, kind: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = artifacts_dir().join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{:016x}", fnv(data)));
    let _ = std::fs::write(&path, data);
    path
}

/// FNV-1a, for artifact names.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Remembers the input about to run (replay mode), so a panic anywhere can save it.
pub fn set_current(target: &str, data: &[u8]) {
    alloc_limit::exempt(|| {
        let mut c = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        match c.as_mut() {
            Some((t, d)) => {
                t.clear();
                t.push_str(target);
                d.clear();
                d.extend_from_slice(data);
            }
            None => *c = Some((target.to_string(), data.to_vec())),
        }
    });
}

/// Installs a panic hook that reports, saves the current input, and aborts: a panic on any
/// thread (a runtime worker included, where tokio would otherwise swallow it) is a finding.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        alloc_limit::exempt(|| {
            default(info);
            if let Ok(c) = CURRENT.try_lock() {
                if let Some((t, d)) = c.as_ref() {
                    let p = save_artifact(t, "panic", d);
                    eprintln!(
                        "fastrpc-fuzz: panic while running a {t} input; saved to {}",
                        p.display()
                    );
                }
            }
        });
        std::process::abort();
    }));
}

/// For the libFuzzer binaries: abort on an allocation over the bound, panic on a finding.
pub fn libfuzzer_init() {
    alloc_limit::abort_on_violation(true);
}

/// For the libFuzzer binaries: runs one input of `target`; a finding panics (libFuzzer keeps
/// the input as a crash).
pub fn libfuzzer_run(target: &str, data: &[u8]) {
    if data.len() > 1 << 20 {
        return;
    }
    if let Err(e) = targets::run(target, data) {
        // The report (message, backtrace) is not the engine's allocation.
        alloc_limit::set_limit(usize::MAX);
        panic!("fastrpc-fuzz {target}: {e}");
    }
}
