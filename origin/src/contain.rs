//! Runs code that can panic on hostile input (rml_rtmp does on some
//! malformed AMF0 commands; an SRT connection's MPEG-TS demuxing runs here
//! whole) and turns the panic into an error for that connection alone. The panic is reported by the caller's log line, not by
//! the default hook, so "panicked" in a log always means an uncontained bug.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static WHERE: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

#[derive(Debug, thiserror::Error)]
#[error("the parser failed on this input ({0})")]
pub(crate) struct Contained(pub(crate) String);

/// Calls `f`; a panic inside it becomes `Err(Contained)`.
pub(crate) fn contained<T>(f: impl FnOnce() -> T) -> Result<T, Contained> {
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if INSIDE.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file().rsplit('/').next().unwrap_or(""), l.line()))
                    .unwrap_or_default();
                WHERE.with(|w| *w.borrow_mut() = Some(at));
            } else {
                default(info);
            }
        }));
    });
    // Restored, not cleared: calls may nest (a contained connection that
    // runs a contained parser).
    let outer = INSIDE.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    INSIDE.with(|c| c.set(outer));
    result.map_err(|_| Contained(WHERE.with(|w| w.borrow_mut().take()).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_thread_goes_on() {
        let r: Result<(), _> = contained(|| {
            let v: Vec<u8> = Vec::new();
            let _ = &v[..3];
        });
        let err = r.unwrap_err();
        assert!(err.0.contains("contain.rs"), "{err}");
        assert_eq!(contained(|| 7).unwrap(), 7);
    }

    #[test]
    fn nested_calls_keep_the_outer_one_quiet_and_contained() {
        let r: Result<(), _> = contained(|| {
            assert!(contained(|| 1).is_ok());
            assert!(
                INSIDE.with(Cell::get),
                "the inner call ended the outer one's containment"
            );
            panic!("after an inner call");
        });
        assert!(r.unwrap_err().0.contains("contain.rs"));
        assert!(!INSIDE.with(Cell::get));
    }
}
