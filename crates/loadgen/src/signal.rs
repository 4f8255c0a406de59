//! SIGINT/SIGTERM end a run cleanly (summary written, CSV flushed), as upstream's
//! `signal.Notify`. The handler only sets a flag; a second signal kills the process
//! (SA_RESETHAND), so a stuck shutdown can still be interrupted.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{LoadgenError, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Install the handlers and clear any earlier request.
pub(crate) fn install() -> Result<()> {
    STOP.store(false, Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic, which is
        // async-signal-safe; the pointers passed are valid for the call.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(LoadgenError::Signal {
                signal: sig,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub(crate) fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
