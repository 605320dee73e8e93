//! What a trap says, and to whom. The log gets all of it: the trap's message, the lines
//! the guest wrote to stderr during the call (a Rust panic message, a Python exception,
//! QuickJS's "expected enum string": the guest's own words, which the wasm backtrace
//! never holds) and the backtrace. `GET /plugins` (`last_error`) gets a short text: the
//! message and those lines. Clients get neither, only "consumer crashed"
//! ([`DocumentError::client_answer`]).

use std::fmt::Display;

use crate::document::error::DocumentError;
use crate::guest::plugin::Plugin;

/// A guest call that trapped.
#[derive(Debug)]
pub struct Trap {
    /// The guest call (`open`, `on-message`, ...).
    what: &'static str,
    /// The trap's own message, one line ("wasm trap: wasm `unreachable` instruction
    /// executed").
    message: String,
    /// What the guest wrote to stderr during the call, oldest first (bounded).
    stderr: Vec<String>,
    /// Everything wasmtime says, backtrace included, for the log.
    full: String,
}

impl Trap {
    /// The trap `error` of the call `what`, with the lines the guest wrote to stderr
    /// during it ([`crate::guest::GuestState::stderr_tail`]).
    pub fn new(what: &'static str, error: &wasmtime::Error, stderr: Vec<String>) -> Trap {
        // The outermost context is "error while executing at wasm backtrace:" and the
        // frames; the root cause is the trap itself.
        let root = error.root_cause().to_string();
        let first = root.lines().next().unwrap_or_default().trim();
        let message = if matches!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            format!("the call ran past its deadline ({first})")
        } else {
            first.to_owned()
        };
        Trap {
            what,
            message,
            stderr,
            full: format!("{error:#}"),
        }
    }

    /// The guest call that trapped.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The short text: the call, the trap's message and the guest's stderr lines.
    pub fn summary(&self) -> String {
        let mut text = format!("trapped in {}: {}", self.what, self.message);
        if !self.stderr.is_empty() {
            text.push_str("; stderr: ");
            text.push_str(&self.stderr.join(" | "));
        }
        text
    }

    /// Logs the trap of `document` (ERROR, with `consequence`: what it ends), records it
    /// as the plugin's last error, and returns the error its caller answers with.
    pub fn report(
        self,
        plugin: &Plugin,
        document: &str,
        consequence: impl Display,
    ) -> DocumentError {
        let last_error = format!("{document}: {}", self.summary());
        let error = self.logged(plugin, document, consequence);
        plugin.last_error.set(last_error);
        error
    }

    /// Like [`Self::report`], without recording it: for a migration, whose caller
    /// records a fuller error (the document stays on its old version, and why).
    pub fn logged(
        self,
        plugin: &Plugin,
        document: &str,
        consequence: impl Display,
    ) -> DocumentError {
        let summary = self.summary();
        tracing::error!(
            plugin = %plugin.name,
            version = %plugin.version,
            doc = %document,
            "consumer {summary}; {consequence} ({})",
            self.full
        );
        DocumentError::Crashed(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_the_trap_and_the_guests_words_not_the_backtrace() {
        let error = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached)
            .context("error while executing at wasm backtrace:\n    0: <wasm function 517>");
        let trap = Trap::new(
            "on-message",
            &error,
            vec!["panicked at src/lib.rs:1:2:".into(), "boom".into()],
        );
        let summary = trap.summary();
        assert!(
            summary.starts_with("trapped in on-message: wasm trap: wasm `unreachable`"),
            "{summary}"
        );
        assert!(
            summary.ends_with("; stderr: panicked at src/lib.rs:1:2: | boom"),
            "{summary}"
        );
        assert!(!summary.contains("wasm function"), "{summary}");
        assert!(trap.full.contains("<wasm function 517>"));
    }

    #[test]
    fn a_deadline_says_so_and_silence_adds_nothing() {
        let error = wasmtime::Error::new(wasmtime::Trap::Interrupt);
        let summary = Trap::new("on-timer", &error, Vec::new()).summary();
        assert!(
            summary.starts_with("trapped in on-timer: the call ran past its deadline"),
            "{summary}"
        );
        assert!(!summary.contains("stderr"), "{summary}");
    }
}
