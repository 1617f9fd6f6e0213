//! Makes a file truncated under a live memory map an error instead of a SIGBUS death.
//!
//! Reading a page of a map that lies past the file's (new) end raises SIGBUS. Trainers that save
//! with safetensors' `save_file` truncate and rewrite in place, so this happens to people who
//! browse a training run. `tensor::Mapped` re-checks the file's identity around every factor;
//! this module makes the remaining race (truncation between that check and the read) harmless:
//! one process-wide SIGBUS handler looks the faulting address up among the registered maps and,
//! when it is inside one, maps an anonymous zero page over the faulting page (`MAP_FIXED`), marks
//! that map changed and returns, so the read goes on over zeros. The reader then sees the mark
//! and discards what it read. No longjmp, no unwinding through foreign frames.
//!
//! Async-signal-safety: the handler only loads and stores atomics of a fixed static table and
//! calls `mmap` and `sigaction`; `mmap` is not in POSIX's list, but on Linux (glibc, musl) it is a
//! plain system call wrapper that takes no lock, as `sigaction` is.
//! Faults outside every registered map go to the previous handler (Rust's stack-overflow
//! handler), or get the default action, so other bugs still end the process as before.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Maps registered at once (an adapter has a handful of files; the explorer computes a few
/// adapters at a time).
const SLOTS: usize = 1024;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    changed: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    changed: AtomicBool::new(false),
};

static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The handler that was there before ours (None if installing failed: then nothing is guarded).
static PREVIOUS: OnceLock<Option<libc::sigaction>> = OnceLock::new();

/// A registered map; unregisters on drop (drop it before unmapping).
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Registers `len` bytes at `ptr` (a live read-only file map). None when the handler could
    /// not be installed or every slot is taken.
    pub fn register(ptr: *const u8, len: usize) -> Option<Guard> {
        if !install() || len == 0 {
            return None;
        }
        for (i, s) in REGISTRY.iter().enumerate() {
            if s.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                s.start.store(ptr as usize, Ordering::Relaxed);
                s.len.store(len, Ordering::Relaxed);
                s.changed.store(false, Ordering::Relaxed);
                s.state.store(ACTIVE, Ordering::Release);
                return Some(Guard { slot: i });
            }
        }
        None
    }

    /// Whether a read of this map faulted (the file shrank under it) since it was registered.
    pub fn faulted(&self) -> bool {
        REGISTRY[self.slot].changed.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        REGISTRY[self.slot].state.store(FREE, Ordering::Release);
    }
}

/// Installs the handler once per process; false if that failed.
fn install() -> bool {
    PREVIOUS
        .get_or_init(|| {
            // SAFETY: sysconf and sigaction with valid, zero-initialised arguments.
            unsafe {
                let page = libc::sysconf(libc::_SC_PAGESIZE);
                if page > 0 {
                    PAGE.store(page as usize, Ordering::Relaxed);
                }
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigbus as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                (libc::sigaction(libc::SIGBUS, &new, &mut old) == 0).then_some(old)
            }
        })
        .is_some()
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in REGISTRY.iter() {
        if s.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        let (start, len) = (
            s.start.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
        if addr >= start && addr - start < len {
            let base = addr & !(PAGE.load(Ordering::Relaxed) - 1);
            // SAFETY: the page lies inside a map this process owns and only reads; replacing it
            // with zeros changes what the reader sees, which the `changed` mark then discards.
            let p = unsafe {
                libc::mmap(
                    base as *mut libc::c_void,
                    PAGE.load(Ordering::Relaxed),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                s.changed.store(true, Ordering::SeqCst);
                return;
            }
            break;
        }
    }
    // Not a guarded map: what would have happened without us.
    // SAFETY: `prev` is the sigaction the kernel returned when ours was installed.
    unsafe {
        match PREVIOUS.get() {
            Some(Some(prev))
                if prev.sa_flags & libc::SA_SIGINFO != 0
                    && prev.sa_sigaction != libc::SIG_DFL
                    && prev.sa_sigaction != libc::SIG_IGN =>
            {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(prev.sa_sigaction);
                f(sig, info, ctx);
            }
            Some(Some(prev))
                if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN =>
            {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
                f(sig);
            }
            _ => {
                // The default action: returning re-runs the faulting access, which now kills.
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}
