//! Card data never leaves a process unmasked: a run of 13 to 19 digits (spaces or dashes
//! allowed between them) that passes the Luhn check keeps its first 6 and last 4 digits.

/// Masks every card-number-like run in `text`.
pub fn mask_pans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
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
