//! Where the library's messages go: a hook the host sets (the C ABI's log callback, or any
//! Rust closure). With no hook nothing is printed: a library does not write to stderr.

use std::sync::RwLock;

/// How much a message matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    /// Something failed and was handled (a connection closed on a protocol error, ...).
    Error = 1,
    /// Something unusual (a handler panicked, a reply was too large, ...).
    Warn = 2,
    /// Connection events (for example a write to a peer that failed).
    Info = 3,
    /// Details for debugging.
    Debug = 4,
}

type Hook = Box<dyn Fn(Level, &str) + Send + Sync>;

static HOOK: RwLock<Option<(Level, Hook)>> = RwLock::new(None);

/// Sends messages up to `max` (Error < Warn < Info < Debug) to `hook`; `None` stops logging.
pub fn set_hook(max: Level, hook: Option<Hook>) {
    let mut h = HOOK.write().unwrap_or_else(|e| e.into_inner());
    *h = hook.map(|f| (max, f));
}

/// True when a message at `level` would be delivered (to skip formatting otherwise).
pub fn enabled(level: Level) -> bool {
    match HOOK.read() {
        Ok(h) => h.as_ref().is_some_and(|(max, _)| level <= *max),
        Err(_) => false,
    }
}

/// Delivers a message to the hook, if one is set and wants this level.
pub fn emit(level: Level, msg: &str) {
    if let Ok(h) = HOOK.read() {
        if let Some((max, f)) = h.as_ref() {
            if level <= *max {
                f(level, msg);
            }
        }
    }
}
