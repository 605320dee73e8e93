//! The text log keeps one event on one line, whatever an event's text holds.
//!
//! Much of what is logged comes from strangers or from consumers: a consumer's own log
//! lines, its errors, rejection reasons, header values. A CR or LF in such text would
//! start what looks like a new line of the host's log (a forged "lane 0 stopped"), and
//! an ANSI escape could rewrite what a terminal shows. So every event is formatted
//! whole, then written with each control character escaped (`\n`, `\r`, `\t`, `\x1b`,
//! `\u{9b}`), except the newline that ends it. The JSON format escapes them by itself.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

/// Makes one [`OneLine`] per event, which writes to stderr when dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedStderr;

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = OneLine;

    fn make_writer(&'a self) -> OneLine {
        OneLine(Vec::with_capacity(256))
    }
}

/// Collects one formatted event (the formatter writes it in pieces).
#[derive(Debug)]
pub struct OneLine(Vec<u8>);

impl Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for OneLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = escape_controls(&String::from_utf8_lossy(&self.0));
        // One write per event, so that lines of different lanes do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// `text` with every control character escaped, except one final newline.
pub fn escape_controls(text: &str) -> String {
    let (body, newline) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (text, ""),
    };
    if !body.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(body.len() + 16);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out.push_str(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_its_line() {
        let event =
            "WARN guest: hello\r\n2026-01-01T00:00:00Z ERROR lane 0 stopped\x1b[2K\u{9b}31m\n";
        assert_eq!(
            escape_controls(event),
            "WARN guest: hello\\r\\n2026-01-01T00:00:00Z ERROR lane 0 stopped\\x1b[2K\\x9b31m\n"
        );
        assert_eq!(escape_controls("plain line\n"), "plain line\n");
        assert_eq!(escape_controls("tab\there"), "tab\\there");
        assert_eq!(escape_controls("non-ASCII é ✓\n"), "non-ASCII é ✓\n");
    }
}
