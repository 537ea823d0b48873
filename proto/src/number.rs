//! Phone numbers: normalisation to E.164 and keyed hashing.
//!
//! Caller numbers are needed only to match callbacks and to correlate B2BUA
//! legs, and both work on equality. So the engine keeps a keyed hash of the
//! normalised number (BLAKE3 keyed with a secret generated at install time)
//! and the raw text only in memory, never serialised.

use serde::{Deserialize, Serialize};

/// Normalises a SIP user part or dialled string to E.164 (`+4416...`).
///
/// UK forms are all the same number: `01632 960000`, `+44 1632 960000`,
/// `0044 1632 960000`, `441632960000`, `+44 (0)1632 960000`. `country` is the
/// default country calling code for national numbers (`"44"`). Visual
/// separators (space, `-`, `.`, `(`, `)`) are ignored. Returns `None` for
/// anything that is not a plausible public number: extensions (fewer than 7
/// digits), `anonymous`, names.
pub fn normalize(raw: &str, country: &str) -> Option<String> {
    let s = raw.trim();
    let s = s
        .strip_prefix("tel:")
        .or_else(|| s.strip_prefix("TEL:"))
        .unwrap_or(s);
    // drop parameters (";phone-context=..." or ";npdi")
    let s = s.split(';').next().unwrap_or("");
    let mut plus = false;
    let mut digits = String::with_capacity(16);
    let mut trunk_zero_in_parens = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '+' if digits.is_empty() && !plus => plus = true,
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | ')' => {}
            '(' => {
                // "+44 (0)1632": a national trunk prefix written in parentheses
                if chars.peek() == Some(&'0') {
                    let mut look = chars.clone();
                    look.next();
                    if look.peek() == Some(&')') {
                        chars.next();
                        chars.next();
                        trunk_zero_in_parens = true;
                    }
                }
            }
            _ => return None,
        }
    }
    let _ = trunk_zero_in_parens;
    if digits.len() < 7 || digits.len() > 15 + 2 {
        return None;
    }
    let e164 = if plus {
        digits
    } else if let Some(intl) = digits.strip_prefix("00") {
        intl.to_string()
    } else if let Some(national) = digits.strip_prefix('0') {
        format!("{country}{national}")
    } else if digits.starts_with(country) && digits.len() >= country.len() + 9 {
        // "441632960000": international without a prefix (common on trunks)
        digits
    } else if country == "44" && digits.len() == 10 {
        // "1632960000": national number without its trunk 0
        format!("{country}{digits}")
    } else {
        digits
    };
    if e164.len() < 8 || e164.len() > 15 {
        return None;
    }
    Some(format!("+{e164}"))
}

/// A keyed hash of a party's identity: the normalised number when it is one,
/// else the lower-cased user part. 16 hex digits (64 bits).
#[derive(Clone)]
pub struct Hasher {
    key: [u8; 32],
    country: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("country", &self.country)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    pub fn new(key: [u8; 32], country: &str) -> Self {
        Hasher {
            key,
            country: country.to_string(),
        }
    }

    pub fn country(&self) -> &str {
        &self.country
    }

    /// Hash of a user part (number or name). Equal numbers in any written
    /// form hash equal.
    pub fn hash(&self, user: &str) -> String {
        let canonical = match normalize(user, &self.country) {
            Some(n) => n,
            None => user.trim().to_ascii_lowercase(),
        };
        let h = blake3::keyed_hash(&self.key, canonical.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(16);
        for b in &h.as_bytes()[..8] {
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
        out
    }

    pub fn party(&self, user: Option<&str>) -> Party {
        match user {
            Some(u) if !u.is_empty() => Party {
                hash: Some(self.hash(u)),
                text: (!self.is_number(u)).then(|| u.to_string()),
                raw: Some(u.to_string()),
            },
            _ => Party::default(),
        }
    }

    /// Whether a user part is a phone number (and so must never be stored).
    pub fn is_number(&self, user: &str) -> bool {
        normalize(user, &self.country).is_some()
    }
}

/// One side of a leg as the engine keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Keyed hash (see [`Hasher`]); what is stored and compared.
    pub hash: Option<String>,
    /// The user part as seen on the wire. In memory only: never serialised,
    /// never logged at default level.
    #[serde(skip)]
    pub raw: Option<String>,
    /// The user part when it is not a phone number (an extension, `ivr`,
    /// `anonymous`): safe to store, and needed to classify legs after a
    /// restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Party {
    /// The user part, if known: as seen, or as stored when not a number.
    pub fn user(&self) -> Option<&str> {
        self.raw.as_deref().or(self.text.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_forms_are_one_number() {
        let want = Some("+441632960000".to_string());
        for form in [
            "01632 960000",
            "+44 1632 960000",
            "441632960000",
            "0044 1632 960000",
            "+44 (0)1632 960000",
            "01632-960-000",
            "tel:+44-1632-960000",
            "+441632960000;npdi",
            "1632960000",
        ] {
            assert_eq!(normalize(form, "44"), want, "{form}");
        }
        assert_eq!(
            normalize("07700 900123", "44").as_deref(),
            Some("+447700900123")
        );
        assert_eq!(
            normalize("+1 202 555 0100", "44").as_deref(),
            Some("+12025550100")
        );
    }

    #[test]
    fn non_numbers_are_none() {
        for s in [
            "anonymous",
            "201",
            "ivr",
            "",
            "+",
            "0800 abc",
            "12345678901234567890",
        ] {
            assert_eq!(normalize(s, "44"), None, "{s}");
        }
    }

    #[test]
    fn hash_is_keyed_stable_and_form_independent() {
        let a = Hasher::new([1; 32], "44");
        let b = Hasher::new([2; 32], "44");
        assert_eq!(a.hash("01632 960000"), a.hash("+441632960000"));
        assert_ne!(a.hash("01632960000"), b.hash("01632960000"));
        assert_eq!(a.hash("IVR"), a.hash("ivr"));
        assert_eq!(a.hash("x").len(), 16);
        let p = a.party(Some("01632960000"));
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("1632"), "raw number serialised: {json}");
        let ext = a.party(Some("201"));
        let back: Party = serde_json::from_str(&serde_json::to_string(&ext).unwrap()).unwrap();
        assert_eq!(back.user(), Some("201"), "extensions survive a snapshot");
    }
}
