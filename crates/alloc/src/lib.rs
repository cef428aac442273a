//! The memory allocator of the `tellonce` binary: mimalloc, with one setting changed for how
//! the hub uses memory. The hub allocates many small, short-lived strings per event on several
//! threads (glibc's allocator spent a measurable share of the ingest path), and a rebuild frees
//! and allocates again, batch after batch, a few hundred megabytes.
//!
//! mimalloc gives memory that has been free for a while back to the operating system (it
//! "purges" it), by default after one second. During a rebuild that was too soon: the same
//! memory was purged and faulted back in again and again, and with transparent huge pages each
//! fault zeroes 2 MiB. A 1M-event rebuild took about 24,000 page faults and 2.5 s of system
//! time; with a 10 s delay it takes about 900 faults and 1 s. [`tune`] sets that delay. Memory
//! still goes back to the system once the hub has not needed it for [`PURGE_DELAY_MS`].
//!
//! This is the only crate of the workspace with unsafe code: mimalloc's option setter has no
//! safe wrapper.

/// The global allocator the binary installs.
pub use mimalloc::MiMalloc as Allocator;

/// How long, in milliseconds, freed memory stays with the process before it goes back to the
/// operating system (mimalloc's own default is 1,000).
pub const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_t` (mimalloc.h, the same in
/// mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: i32 = 15;

#[allow(unsafe_code)]
mod ffi {
    extern "C" {
        /// Sets an option's value unless the environment (`MIMALLOC_<OPTION>`) set it.
        pub fn mi_option_set_default(option: i32, value: std::ffi::c_long);
        /// An option's value.
        pub fn mi_option_get(option: i32) -> std::ffi::c_long;
    }
}

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`], unless `MIMALLOC_PURGE_DELAY` is set
/// (then that wins). Call it first thing in `main`; it is cheap and may be called again.
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: both functions only read or write an entry of mimalloc's static option table,
    // indexed by a valid option number; they take no pointers.
    unsafe {
        ffi::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

/// mimalloc's current purge delay in milliseconds (-1: never purge).
#[allow(unsafe_code)]
pub fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reads an entry of mimalloc's static option table (see `tune`).
    unsafe { ffi::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: Allocator = Allocator;

    #[test]
    fn tune_sets_the_purge_delay_unless_the_environment_did() {
        let before = purge_delay_ms();
        tune();
        let expected = match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(_) => before,
            Err(_) => PURGE_DELAY_MS,
        };
        assert_eq!(purge_delay_ms(), expected);
        // mimalloc's own default, which the option number must be naming.
        if std::env::var("MIMALLOC_PURGE_DELAY").is_err() {
            assert_eq!(
                before, 1_000,
                "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
            );
        }
    }
}
