//! Card data never leaves a process unmasked: a run of 13 to 19 digits (spaces or dashes
//! allowed between them) that passes the Luhn check keeps its first 6 and last 4 digits.

/// Masks every card-number-like run in `text`.
pub fn mask_pans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // A UUID (a workflow id, a trace's) is never a card number, though its last group
        // can be twelve digits that, with the digit before them, pass the Luhn check.
        if (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) && is_uuid_at(&chars, i) {
            out.extend(&chars[i..i + 36]);
            i += 36;
            continue;
        }
        if chars[i].is_ascii_digit() {
            // Longest run of digits with single separators.
            let mut end = i;
            let mut digits = Vec::new();
            let mut j = i;
            while j < chars.len() {
                if chars[j].is_ascii_digit() {
                    digits.push(chars[j]);
                    end = j + 1;
                    j += 1;
                } else if matches!(chars[j], ' ' | '-')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()
                {
                    j += 1;
                } else {
                    break;
                }
            }
            if (13..=19).contains(&digits.len()) && luhn(&digits) {
                let masked: String = digits
                    .iter()
                    .enumerate()
                    .map(|(k, d)| {
                        if k < 6 || k >= digits.len() - 4 {
                            *d
                        } else {
                            '*'
                        }
                    })
                    .collect();
                out.push_str(&masked);
            } else {
                out.extend(&chars[i..end]);
            }
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// 8-4-4-4-12 hex digits with hyphens at `at`, not followed by more of a word.
fn is_uuid_at(chars: &[char], at: usize) -> bool {
    let Some(candidate) = chars.get(at..at + 36) else {
        return false;
    };
    let shaped = candidate.iter().enumerate().all(|(k, c)| match k {
        8 | 13 | 18 | 23 => *c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    shaped
        && chars
            .get(at + 36)
            .is_none_or(|c| !c.is_ascii_alphanumeric())
}

fn luhn(digits: &[char]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap_or(0);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen in CI: a workflow id whose last group was all digits lost its middle to the
    /// card mask (`acf6-511597413939`: 13 digits passing Luhn).
    #[test]
    fn uuids_are_not_card_numbers() {
        let id = "01a237c1-db38-7b50-acf6-511597413939";
        assert_eq!(
            mask_pans(&format!("workflow {id} ended")),
            format!("workflow {id} ended")
        );
        assert_eq!(mask_pans(id), id);
        assert_eq!(
            mask_pans(&format!("{id} paid with 4111 1111 1111 1111")),
            format!("{id} paid with 411111******1111")
        );
        // Not a UUID when part of a longer word: the digits are checked as before.
        assert_eq!(
            mask_pans("x01a237c1-db38-7b50-acf6-511597413939"),
            "x01a237c1-db38-7b50-acf651159***3939"
        );
    }

    #[test]
    fn masks_luhn_valid_numbers_only() {
        assert_eq!(
            mask_pans("card 4242424242424242 ok"),
            "card 424242******4242 ok"
        );
        assert_eq!(mask_pans("4242 4242 4242 4242"), "424242******4242");
        assert_eq!(mask_pans("order 1234567890123"), "order 1234567890123");
        assert_eq!(mask_pans("amount 1250"), "amount 1250");
    }
}

/// Whether `text` may hold card data at all: a run of 13 or more digits (separators
/// allowed) or a CVV-like field name. A cheap scan that lets hot paths skip redaction.
pub fn might_hold_card_data(text: &str) -> bool {
    let mut digits = 0;
    let mut previous_separator = false;
    for byte in text.bytes() {
        if byte.is_ascii_digit() {
            digits += 1;
            previous_separator = false;
            if digits >= 13 {
                return true;
            }
        } else if matches!(byte, b' ' | b'-') && digits > 0 && !previous_separator {
            previous_separator = true;
        } else {
            digits = 0;
            previous_separator = false;
        }
    }
    let lower = text.to_ascii_lowercase();
    ["cvv", "cvc", "cid", "csc", "security", "verification"]
        .iter()
        .any(|name| lower.contains(name))
}

/// Field names whose values are never shown: CVV and security codes.
pub fn is_secret_field(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        name.as_str(),
        "cvv"
            | "cvv2"
            | "cvc"
            | "cvc2"
            | "cid"
            | "csc"
            | "securitycode"
            | "cardsecuritycode"
            | "cardverificationvalue"
            | "cardverificationcode"
    )
}

/// Masks card numbers and replaces CVV-like field values in one formatted line, as
/// `key=value`, `key: value` or `"key":"value"`.
pub fn redact_text(text: &str) -> String {
    let masked = mask_pans(text);
    let bytes = masked.as_bytes();
    let mut out = String::with_capacity(masked.len());
    let mut i = 0;
    while i < bytes.len() {
        // Find a key: a run of word characters, optionally quoted.
        if bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
            {
                i += 1;
            }
            let key = &masked[start..i];
            out.push_str(key);
            if is_secret_field(key) {
                let mut j = i;
                if j < bytes.len() && bytes[j] == b'"' {
                    j += 1;
                }
                while j < bytes.len() && bytes[j] == b' ' {
                    j += 1;
                }
                if j < bytes.len() && (bytes[j] == b'=' || bytes[j] == b':') {
                    j += 1;
                    while j < bytes.len() && bytes[j] == b' ' {
                        j += 1;
                    }
                    // The value: quoted, or up to a separator.
                    let value_start = j;
                    if j < bytes.len() && bytes[j] == b'"' {
                        j += 1;
                        while j < bytes.len() && bytes[j] != b'"' {
                            j += if bytes[j] == b'\\' { 2 } else { 1 };
                        }
                        j = (j + 1).min(bytes.len());
                    } else {
                        while j < bytes.len() && !matches!(bytes[j], b' ' | b',' | b'}' | b'\n') {
                            j += 1;
                        }
                    }
                    out.push_str(&masked[i..value_start]);
                    out.push_str("\"[redacted]\"");
                    i = j;
                }
            }
        } else {
            let ch = masked[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Redacts a JSON value in place: card numbers masked in every string, CVV-like fields
/// replaced. Workflow inputs pass through this at `Submit`, so nothing downstream (store,
/// agents, logs, status) ever holds a full card number or a CVV.
///
/// A number is masked only under a card-like field name (`pan`, `card_number`, ...):
/// microsecond timestamps and ids are 16-digit numbers too, and one in ten passes Luhn.
pub fn redact_json(value: &mut serde_json::Value) -> bool {
    redact_json_under(value, false)
}

fn redact_json_under(value: &mut serde_json::Value, card_field: bool) -> bool {
    let mut changed = false;
    match value {
        serde_json::Value::String(text) => {
            // Free text too: `cvv=737` inside a note is a CVV.
            let masked = redact_text(text);
            if masked != *text {
                *text = masked;
                changed = true;
            }
        }
        serde_json::Value::Number(number) if card_field => {
            let text = number.to_string();
            let masked = mask_pans(&text);
            if masked != text {
                *value = serde_json::Value::String(masked);
                changed = true;
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                changed |= redact_json_under(item, card_field);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_secret_field(key) {
                    *item = serde_json::Value::String("[redacted]".into());
                    changed = true;
                } else {
                    changed |= redact_json_under(item, is_card_field(key));
                }
            }
        }
        _ => {}
    }
    changed
}

/// Field names that may hold a card number as a JSON number.
fn is_card_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pan", "card", "number", "account"]
        .iter()
        .any(|part| name.contains(part))
}

/// A `MakeWriter` that redacts every formatted log line before it reaches `inner`.
pub struct Redacting<M>(pub M);

/// Buffers one event's output and writes it redacted when dropped.
pub struct RedactingWriter<W: std::io::Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: std::io::Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        let _ = self.inner.write_all(redact_text(&text).as_bytes());
        let _ = self.inner.flush();
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Redacting<M>
{
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.0.make_writer(),
            buffer: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn cvv_fields_are_replaced_in_any_format() {
        assert_eq!(redact_text("cvv=123 ok"), "cvv=\"[redacted]\" ok");
        assert_eq!(
            redact_text(r#"{"cvc":"987","a":1}"#),
            r#"{"cvc":"[redacted]","a":1}"#
        );
        assert_eq!(
            redact_text("security_code: 4321"),
            "security_code: \"[redacted]\""
        );
        assert_eq!(
            redact_text("pan 4111 1111 1111 1111"),
            "pan 411111******1111"
        );
    }

    #[test]
    fn cvvs_in_free_text_and_pans_in_labels_are_redacted() {
        let mut input = serde_json::json!({"note": "customer said cvv=737 on the phone", "label": "card_number=4111 1111 1111 1111"});
        assert!(redact_json(&mut input));
        let text = input.to_string();
        assert!(!text.contains("737"), "{text}");
        assert!(!text.contains("4111 1111 1111 1111"), "{text}");
        assert!(might_hold_card_data("pan 4111 1111 1111 1111"));
        assert!(might_hold_card_data("CVV: 123"));
        assert!(!might_hold_card_data(
            r#"{"authorization_id":"auth_alpha_12","amount_minor":1250}"#
        ));
    }

    #[test]
    fn timestamps_are_not_card_numbers() {
        // Luhn-valid, 16 digits, and a timestamp: left alone unless its field is card-like.
        assert_eq!(mask_pans("4242424242424242"), "424242******4242");
        let mut output = serde_json::json!({"finished_at_us": 4242424242424242_u64, "card": {"number": 4242424242424242_u64}});
        assert!(redact_json(&mut output));
        assert_eq!(
            output,
            serde_json::json!({"finished_at_us": 4242424242424242_u64, "card": {"number": "424242******4242"}})
        );
    }

    #[test]
    fn json_inputs_are_redacted() {
        let mut input = serde_json::json!({"card_number": "4242424242424242", "cvv": "123", "nested": {"pan": 4000056655665556_u64}, "amount_minor": 1250});
        assert!(redact_json(&mut input));
        assert_eq!(
            input,
            serde_json::json!({"card_number": "424242******4242", "cvv": "[redacted]", "nested": {"pan": "400005******5556"}, "amount_minor": 1250})
        );
    }
}
