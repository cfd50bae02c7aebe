//! The fields of a text log line without colours, written straight to the line: the very
//! output of tracing-subscriber's `DefaultFields` (the tests compare them), at a fraction
//! of the cost. Without colours `DefaultFields` still runs every field name through a
//! styling layer and every string through `Debug`'s escaping; a proxy's access line has
//! twenty fields and is written per request. Strings of printable ASCII without `"` or
//! `\` (what `Debug` would not escape) are quoted as they are; anything else, the
//! message and errors go the default way.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// A `FormatFields` for text without colours.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> MakeVisitor<Writer<'w>> for PlainFields {
    type Visitor = PlainVisitor<'w>;

    fn make_visitor(&self, target: Writer<'w>) -> PlainVisitor<'w> {
        PlainVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields (see the module).
#[derive(Debug)]
pub struct PlainVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes the separator and `name=`; false when the field is not written at all.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        let name = field.name();
        // Log records' metadata, already in the line's head (as `DefaultFields` skips it).
        if name.starts_with("log.") {
            return false;
        }
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok()
    }

    /// The message and errors: exactly as `DefaultFields` writes them.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }
}

/// Whether `Debug` writes `s` between quotes unchanged.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.by_default(|v| v.record_str(field, value));
            return;
        }
        if !self.start(field) {
            return;
        }
        self.result = if needs_no_escape(value) {
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field) {
            self.result = match thousandths(value) {
                Some(text) => text.write(&mut self.writer),
                None => write!(self.writer, "{value:?}"),
            };
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.by_default(|v| v.record_debug(field, value));
            return;
        }
        if self.start(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// A number of thousandths, as `Debug` writes the `f64` it is (`0.931`, `12.5`, `3.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Thousandths {
    negative: bool,
    whole: u64,
    /// 0..1000.
    fraction: u64,
}

impl Thousandths {
    fn write(self, w: &mut impl fmt::Write) -> fmt::Result {
        if self.negative {
            w.write_char('-')?;
        }
        write!(w, "{}.", self.whole)?;
        if self.fraction == 0 {
            return w.write_char('0');
        }
        // Trailing zeros dropped, as the shortest round-trip form has none.
        let (digits, width) = match self.fraction {
            f if f % 100 == 0 => (f / 100, 1),
            f if f % 10 == 0 => (f / 10, 2),
            f => (f, 3),
        };
        write!(w, "{digits:0width$}")
    }
}

/// `value` as a whole number of thousandths, when it is exactly the `f64` nearest to one
/// (a duration rounded to the microsecond, say) of at most 15 significant digits: then
/// `Debug`'s shortest round-trip form is that decimal, written without the float
/// formatting machinery. `None` for anything else (zero included, for its sign).
fn thousandths(value: f64) -> Option<Thousandths> {
    const LIMIT: f64 = 1e15;
    let scaled = (value * 1000.0).round();
    if value == 0.0 || !scaled.is_finite() || scaled.abs() >= LIMIT || scaled / 1000.0 != value {
        return None;
    }
    // |scaled| < 1e15: exact as an integer.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = scaled.abs() as u64;
    Some(Thousandths {
        negative: value < 0.0,
        whole: n / 1000,
        fraction: n % 1000,
    })
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests;
