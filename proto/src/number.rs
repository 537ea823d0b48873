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
    // written straight into the result: "+", then the digits in E.164
    let mut out = String::with_capacity(1 + country.len() + digits.len());
    out.push('+');
    if plus {
        out.push_str(&digits);
    } else if let Some(intl) = digits.strip_prefix("00") {
        out.push_str(intl);
    } else if let Some(national) = digits.strip_prefix('0') {
        out.push_str(country);
        out.push_str(national);
    } else if digits.starts_with(country) && digits.len() >= country.len() + 9 {
        // "441632960000": international without a prefix (common on trunks)
        out.push_str(&digits);
    } else if country == "44" && digits.len() == 10 {
        // "1632960000": national number without its trunk 0
        out.push_str(country);
        out.push_str(&digits);
    } else {
        out.push_str(&digits);
    }
    let e164_digits = out.len() - 1;
    if !(8..=15).contains(&e164_digits) {
        return None;
    }
    Some(out)
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
        f.debug_struct("Hasher").field("country", &self.country).finish_non_exhaustive()
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
        self.hash_id(user).as_str().to_string()
    }

    /// [`Hasher::hash`] without an allocation: what legs and calls keep.
    pub fn hash_id(&self, user: &str) -> NumHash {
        self.hash_normalised(user, normalize(user, &self.country))
    }

    /// [`Hasher::hash_id`] and whether `user` is a phone number (which
    /// must never be stored), from one normalisation.
    pub fn hash_and_is_number(&self, user: &str) -> (NumHash, bool) {
        let number = normalize(user, &self.country);
        let is_number = number.is_some();
        (self.hash_normalised(user, number), is_number)
    }

    /// The hash of `user`, given what [`normalize`] made of it.
    fn hash_normalised(&self, user: &str, number: Option<String>) -> NumHash {
        let canonical = match number {
            Some(n) => n,
            None => user.trim().to_ascii_lowercase(),
        };
        let h = blake3::keyed_hash(&self.key, canonical.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in h.as_bytes()[..8].iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        NumHash(out)
    }

    pub fn party(&self, user: Option<&str>) -> Party {
        match user {
            Some(u) if !u.is_empty() => {
                let (hash, is_number) = self.hash_and_is_number(u);
                Party {
                    hash: Some(hash),
                    user: Some(u.into()),
                    storable: !is_number,
                }
            }
            _ => Party::default(),
        }
    }
}

/// A keyed hash as [`Hasher::hash`] writes it (16 lower-case hex digits),
/// held inline: a leg keeps several, and a `String` each cost an
/// allocation. Serialised as the same string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumHash([u8; 16]);

impl NumHash {
    pub fn as_str(&self) -> &str {
        // only ever made of ASCII hex digits (hash_id, parse)
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// A stored hash: exactly 16 hex digits, lower case.
    pub fn parse(s: &str) -> Option<NumHash> {
        let b: [u8; 16] = s.as_bytes().try_into().ok()?;
        b.iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(NumHash(b))
    }
}

impl std::fmt::Display for NumHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for NumHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for NumHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NumHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        NumHash::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("not a number hash (16 hex digits): {s:?}"))
        })
    }
}

/// One side of a leg as the engine keeps it.
///
/// Stored as `{hash, text}`: the user part is kept (`text`) only when it
/// is not a phone number (an extension, `ivr`, `anonymous`), needed to
/// classify legs after a restart; a number stays in memory only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PartyRepr", into = "PartyRepr")]
pub struct Party {
    /// Keyed hash (see [`Hasher`]); what is stored and compared.
    pub hash: Option<NumHash>,
    /// The user part: as seen on the wire, or as stored (then `storable`).
    /// Never serialised when it is a number, never logged at default level.
    pub user: Option<compact_str::CompactString>,
    /// `user` is not a phone number: safe to store.
    pub storable: bool,
}

#[derive(Serialize, Deserialize)]
struct PartyRepr {
    hash: Option<NumHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<Box<str>>,
}

impl From<PartyRepr> for Party {
    fn from(r: PartyRepr) -> Party {
        Party {
            hash: r.hash,
            storable: r.text.is_some(),
            user: r.text.map(|t| t.as_ref().into()),
        }
    }
}

impl From<Party> for PartyRepr {
    fn from(p: Party) -> PartyRepr {
        PartyRepr {
            hash: p.hash,
            text: p.text().map(Into::into),
        }
    }
}

impl Party {
    /// The user part, if known: as seen, or as stored when not a number.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The user part when it may be stored (not a phone number).
    pub fn text(&self) -> Option<&str> {
        self.user.as_deref().filter(|_| self.storable)
    }

    /// The hash as its 16 hex digits.
    pub fn hash_str(&self) -> Option<&str> {
        self.hash.as_ref().map(NumHash::as_str)
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
        assert_eq!(normalize("07700 900123", "44").as_deref(), Some("+447700900123"));
        assert_eq!(normalize("+1 202 555 0100", "44").as_deref(), Some("+12025550100"));
    }

    #[test]
    fn non_numbers_are_none() {
        for s in ["anonymous", "201", "ivr", "", "+", "0800 abc", "12345678901234567890"] {
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

    #[test]
    fn a_party_is_stored_as_before_and_a_hash_must_be_one() {
        let a = Hasher::new([1; 32], "44");
        let h = a.hash("01632960000");
        let num = a.party(Some("01632960000"));
        assert_eq!(num.hash_str(), Some(h.as_str()));
        assert_eq!(num.user(), Some("01632960000"), "in memory");
        // the form 0.1 and 0.2 wrote: {"hash":"<16 hex>"} plus text for a
        // user part that is not a number
        assert_eq!(
            serde_json::to_string(&num).unwrap(),
            format!(r#"{{"hash":"{h}"}}"#)
        );
        let ext = a.party(Some("201"));
        assert_eq!(
            serde_json::to_string(&ext).unwrap(),
            format!(r#"{{"hash":"{}","text":"201"}}"#, a.hash("201"))
        );
        let old: Party = serde_json::from_str(&format!(r#"{{"hash":"{h}"}}"#)).unwrap();
        assert_eq!((old.hash_str(), old.user()), (Some(h.as_str()), None));
        for bad in [
            r#"{"hash":"+441632960000"}"#,
            r#"{"hash":"ABCDEF0123456789"}"#,
            r#"{"hash":"abc"}"#,
        ] {
            let err = serde_json::from_str::<Party>(bad).unwrap_err().to_string();
            assert!(err.contains("not a number hash"), "{bad}: {err}");
        }
    }
}
