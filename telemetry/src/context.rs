//! W3C trace context: `traceparent` parsing and formatting, span ids derived from stable
//! facts (so a span recorded after a restart keeps the id its children already point to),
//! and the bridge between a carried `traceparent` and `tracing` spans.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The parts of a `traceparent` header (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace: random trace id and span id, sampled.
    pub fn new_root() -> Self {
        let mut trace = [0u8; 16];
        let mut span = [0u8; 8];
        loop {
            trace.iter_mut().for_each(|b| *b = fastrand::u8(..));
            span.iter_mut().for_each(|b| *b = fastrand::u8(..));
            if trace != [0; 16] && span != [0; 8] {
                break;
            }
        }
        Self {
            trace_id: TraceId::from_bytes(trace),
            span_id: SpanId::from_bytes(span),
            sampled: true,
        }
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything else or all-zero ids.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let lower = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower(trace) || !lower(span) || !lower(version) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// This context with another span id (same trace, same flags).
    pub fn with_span(self, span_id: SpanId) -> Self {
        Self { span_id, ..self }
    }

    /// A child span id derived from this span and two numbers: the same inputs give the
    /// same id in every process and after every restart.
    pub fn derive(self, a: u64, b: u64) -> SpanId {
        let seed = u64::from_be_bytes(self.span_id.to_bytes());
        let mut id = mix(mix(seed ^ mix(a)) ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if id == 0 {
            id = 1;
        }
        SpanId::from_bytes(id.to_be_bytes())
    }

    /// As a remote parent for spans started in this process.
    pub fn span_context(self, tracestate: &str) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let state = tracestate.parse::<TraceState>().unwrap_or_default();
        SpanContext::new(self.trace_id, self.span_id, flags, true, state)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Makes the carried context the parent of `span` (a `tracing` span). A malformed or
/// empty `traceparent` leaves the span a root.
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if let Some(parent) = TraceParent::parse(traceparent) {
        let cx =
            opentelemetry::Context::new().with_remote_span_context(parent.span_context(tracestate));
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` and `tracestate` to send onwards from inside `span`. Empty strings
/// when the span is not exported (export off, or filtered out).
pub fn inject(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let span_ref = cx.span();
    let context = span_ref.span_context();
    if !context.is_valid() {
        return (String::new(), String::new());
    }
    let parent = TraceParent {
        trace_id: context.trace_id(),
        span_id: context.span_id(),
        sampled: context.is_sampled(),
    };
    (parent.to_string(), context.trace_state().header())
}

/// A failure on `span`: a `paygrid.error` event (code, message, retryable) and the error
/// status. Does nothing on a span that is not exported.
pub fn record_error(span: &tracing::Span, code: &str, message: &str, retryable: bool) {
    if span.is_none() {
        return;
    }
    span.add_event(
        crate::semconv::event::ERROR,
        vec![
            opentelemetry::KeyValue::new(crate::semconv::ERROR_CODE, code.to_owned()),
            opentelemetry::KeyValue::new(crate::semconv::ERROR_MESSAGE, message.to_owned()),
            opentelemetry::KeyValue::new(crate::semconv::RETRYABLE, retryable),
        ],
    );
    span.set_status(opentelemetry::trace::Status::error(message.to_owned()));
}

/// The context a client sends: `span`'s when it is exported, else the `TRACEPARENT` and
/// `TRACESTATE` environment variables (so a script can put `paygrid submit` into its own
/// trace), else none.
pub fn outgoing(span: &tracing::Span) -> Option<(String, String)> {
    let (traceparent, tracestate) = inject(span);
    if !traceparent.is_empty() {
        return Some((traceparent, tracestate));
    }
    let traceparent = std::env::var("TRACEPARENT").ok()?;
    TraceParent::parse(&traceparent)?;
    Some((traceparent, std::env::var("TRACESTATE").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).expect("valid");
        assert_eq!(parsed.to_string(), header);
        assert!(parsed.sampled);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let root = TraceParent::new_root();
        assert_eq!(root.derive(3, 1), root.derive(3, 1));
        assert_ne!(root.derive(3, 1), root.derive(3, 2));
        assert_ne!(root.derive(3, 1), root.derive(4, 1));
        assert_ne!(root.derive(0, 0), SpanId::INVALID);
    }
}
