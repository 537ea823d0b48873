//! The site: practices and their numbers, who is who on the network, and the
//! rules that turn legs into calls. Built and validated from the TOML file by
//! `cbt-agent` (`agent/src/config.rs`); here only the checked values live.

use crate::number::{self, Hasher};
use crate::time::Micros;
use chrono::NaiveDate;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// Name used for calls to numbers of no configured practice when several
/// practices share the site.
pub const UNASSIGNED: &str = "Unassigned";

/// An address, a CIDR block or an inclusive range, optionally with a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrMatch {
    Addr(IpAddr, Option<u16>),
    Net(ipnet::IpNet),
    Range(IpAddr, IpAddr),
}

impl std::fmt::Display for AddrMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddrMatch::Addr(ip, None) => write!(f, "{ip}"),
            AddrMatch::Addr(ip, Some(p)) => write!(f, "{}", SocketAddr::new(*ip, *p)),
            AddrMatch::Net(n) => write!(f, "{n}"),
            AddrMatch::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

impl AddrMatch {
    /// Parses `10.0.0.5`, `10.0.0.5:5060`, `[2001:db8::1]:5060`,
    /// `10.0.0.0/24` or `10.0.0.10-10.0.0.40`.
    pub fn parse(s: &str) -> Result<AddrMatch, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| format!("`{a}` is not an IP address"))?;
            let b: IpAddr = b.trim().parse().map_err(|_| format!("`{b}` is not an IP address"))?;
            if a.is_ipv4() != b.is_ipv4() || a > b {
                return Err(format!("`{s}` is not a range (write low-high, both IPv4 or both IPv6)"));
            }
            return Ok(AddrMatch::Range(a, b));
        }
        if s.contains('/') {
            return s
                .parse::<ipnet::IpNet>()
                .map(|n| AddrMatch::Net(n.trunc()))
                .map_err(|_| format!("`{s}` is not a CIDR block (like 10.20.1.0/24)"));
        }
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(AddrMatch::Addr(a, None));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(AddrMatch::Addr(sa.ip(), Some(sa.port())));
        }
        Err(format!(
            "`{s}` is not an address, address:port, CIDR block or range (like 10.20.0.5, 10.20.1.0/24 or 10.20.2.10-10.20.2.40)"
        ))
    }

    pub fn matches(&self, a: SocketAddr) -> bool {
        match self {
            AddrMatch::Addr(ip, port) => *ip == a.ip() && port.is_none_or(|p| p == a.port()),
            AddrMatch::Net(n) => n.contains(&a.ip()),
            AddrMatch::Range(lo, hi) => {
                let ip = a.ip();
                ip.is_ipv4() == lo.is_ipv4() && *lo <= ip && ip <= *hi
            }
        }
    }
}

/// An extension-number pattern: digits, `X` (any digit), `N` (2-9), `Z`
/// (1-9), `[1-4]` classes, and a trailing `.` for "one or more of anything".
/// `2XX` matches 200-299.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtPattern {
    items: Vec<ExtItem>,
    rest: bool,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ExtItem {
    Lit(char),
    Class(Vec<(char, char)>),
}

impl ExtPattern {
    pub fn parse(s: &str) -> Result<ExtPattern, String> {
        let mut items = Vec::new();
        let mut rest = false;
        let mut chars = s.trim().chars().peekable();
        while let Some(c) = chars.next() {
            if rest {
                return Err(format!("`{s}`: `.` may only end a pattern"));
            }
            match c {
                'X' | 'x' => items.push(ExtItem::Class(vec![('0', '9')])),
                'N' | 'n' => items.push(ExtItem::Class(vec![('2', '9')])),
                'Z' | 'z' => items.push(ExtItem::Class(vec![('1', '9')])),
                '.' => rest = true,
                '[' => {
                    let mut ranges = Vec::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(a) if a.is_ascii_digit() => {
                                if chars.peek() == Some(&'-') {
                                    chars.next();
                                    match chars.next() {
                                        Some(b) if b.is_ascii_digit() && b >= a => ranges.push((a, b)),
                                        _ => return Err(format!("`{s}`: bad range in [...]")),
                                    }
                                } else {
                                    ranges.push((a, a));
                                }
                            }
                            _ => return Err(format!("`{s}`: [...] holds digits and ranges like [1-4]")),
                        }
                    }
                    if ranges.is_empty() {
                        return Err(format!("`{s}`: empty [...]"));
                    }
                    items.push(ExtItem::Class(ranges));
                }
                c if c.is_ascii_digit() || c == '*' || c == '#' || c == '+' => items.push(ExtItem::Lit(c)),
                _ => {
                    return Err(format!(
                        "`{s}`: use digits, X (any digit), N (2-9), Z (1-9), [1-4] and a final . (anything more)"
                    ))
                }
            }
        }
        if items.is_empty() {
            return Err("an empty extension pattern".into());
        }
        Ok(ExtPattern {
            items,
            rest,
            text: s.trim().to_string(),
        })
    }

    pub fn matches(&self, user: &str) -> bool {
        let chars: Vec<char> = user.chars().collect();
        if chars.len() < self.items.len() || (!self.rest && chars.len() != self.items.len()) {
            return false;
        }
        if self.rest && chars.len() == self.items.len() {
            return false;
        }
        self.items.iter().zip(&chars).all(|(item, c)| match item {
            ExtItem::Lit(l) => l == c,
            ExtItem::Class(ranges) => ranges.iter().any(|(a, b)| a <= c && c <= b),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A SIP user part to recognise: exact (case-insensitive), or a prefix when
/// it ends with `*` (`vm*`). A leading `*` is literal (`*99`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMatch {
    text: String,
    prefix: bool,
    /// Keyed hash of the normalised number, when the text is a phone number.
    number_hash: Option<String>,
}

impl UserMatch {
    pub fn new(s: &str, hasher: &Hasher) -> UserMatch {
        let s = s.trim();
        let (text, prefix) = match s.strip_suffix('*') {
            Some(p) if !p.is_empty() => (p.to_ascii_lowercase(), true),
            _ => (s.to_ascii_lowercase(), false),
        };
        let number_hash = if prefix {
            None
        } else {
            number::normalize(&text, hasher.country()).map(|_| hasher.hash(&text))
        };
        UserMatch {
            text,
            prefix,
            number_hash,
        }
    }

    /// Matches a raw user part, or (for numbers) its hash.
    pub fn matches(&self, raw: Option<&str>, hash: Option<&str>) -> bool {
        if let (Some(h), Some(mine)) = (hash, &self.number_hash) {
            if h == mine {
                return true;
            }
        }
        match raw {
            Some(u) => {
                let u = u.to_ascii_lowercase();
                if self.prefix {
                    u.starts_with(&self.text)
                } else {
                    u == self.text
                }
            }
            None => false,
        }
    }
}

/// An endpoint to recognise by address or by SIP user part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Addr(AddrMatch),
    User(UserMatch),
}

impl Endpoint {
    /// An address form if it parses as one, else a user part.
    pub fn parse(s: &str, hasher: &Hasher) -> Endpoint {
        match AddrMatch::parse(s) {
            Ok(a) if s.chars().any(|c| c == '.' || c == ':') => Endpoint::Addr(a),
            _ => Endpoint::User(UserMatch::new(s, hasher)),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgCodes {
    pub region: Option<String>,
    pub icb: Option<String>,
    pub sub_icb: Option<String>,
    pub pcn: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Practice {
    /// ODS code, `^[A-Z][0-9]{5}$`.
    pub ods: String,
    pub name: Option<String>,
    /// Keyed hashes of the normalised DDIs.
    pub number_hashes: Vec<String>,
    pub codes: OrgCodes,
}

/// How long after a callback request an outbound call to the caller counts
/// as the callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackWindow {
    /// Until the end of the request's local calendar day.
    SameDay,
    /// A fixed span after the request.
    Within(Micros),
}

/// A practice as configured: its ODS code, its numbers (E.164) and its
/// organisation codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PracticeSpec {
    /// ODS code, `^[A-Z][0-9]{5}$`.
    pub ods: String,
    pub name: Option<String>,
    /// The DDIs, normalised to E.164 (the practice's own public numbers).
    pub numbers: Vec<String>,
    pub codes: OrgCodes,
}

/// The site as configured: what `cbt-agent`'s configuration file says,
/// validated, before any number is hashed. The configuration holds one
/// ([`Site::new`] makes the engine's rules from it), so the two never
/// disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSpec {
    pub practices: Vec<PracticeSpec>,
    pub timezone: chrono_tz::Tz,
    pub country_code: String,
    pub carrier: Vec<AddrMatch>,
    pub pbx: Vec<AddrMatch>,
    pub staff: Vec<AddrMatch>,
    pub staff_extensions: Vec<ExtPattern>,
    /// What a handset dials to pick up a call ringing another (`*8`, group
    /// pickup; `**2XX`, directed): a PBX that bridges the call itself
    /// answers that leg, and the call is answered then.
    pub pickup_codes: Vec<ExtPattern>,
    /// Automated endpoints: addresses or SIP user parts (`10.20.0.6`, `ivr`).
    pub automated: Vec<String>,
    /// Automated endpoints that are voicemail (reaching one: missed).
    pub voicemail: Vec<String>,
    /// Automated endpoints that are queues (joining one: queue_joined).
    pub queue: Vec<String>,
    /// Destinations that mean "the caller asked for a callback".
    pub callback_request: Vec<String>,
    /// A header whose presence on an inbound leg marks a callback request.
    pub callback_header: Option<String>,
    pub callback_window: CallbackWindow,
    /// Addresses that place callbacks besides the trunk (a callback server).
    pub callback_originators: Vec<AddrMatch>,
    /// Headers carrying the trunk leg's Call-ID on other legs (e.g. X-CID).
    pub correlation_headers: Vec<String>,
    /// Correlate B2BUA legs by caller identity and time overlap.
    pub b2bua: bool,
    pub bank_holidays: BTreeSet<NaiveDate>,
    /// Upper edges (seconds) of the wait buckets: `[0, 30, 60, ...]` gives
    /// `0`, `1_30`, `31_60`, ..., `>last`.
    pub wait_edges: Vec<u32>,
    pub duration_edges: Vec<u32>,
    /// After the trunk leg ends, how long to wait for its other legs to end.
    pub settle: Micros,
    /// Inbound calls to a number no practice lists are not this agent's
    /// (several agents share one HEP feed, each owning some practices),
    /// rather than the `Unassigned` practice's.
    pub ignore_unlisted: bool,
}

impl SiteSpec {
    /// One practice and nothing else: every call from outside goes to it.
    pub fn single(ods: &str, numbers: &[&str], country_code: &str) -> SiteSpec {
        SiteSpec {
            practices: vec![PracticeSpec {
                ods: ods.to_string(),
                name: None,
                numbers: numbers.iter().map(|n| n.to_string()).collect(),
                codes: OrgCodes::default(),
            }],
            timezone: chrono_tz::Europe::London,
            country_code: country_code.to_string(),
            carrier: vec![],
            pbx: vec![],
            staff: vec![],
            staff_extensions: vec![],
            pickup_codes: vec![],
            automated: vec![],
            voicemail: vec![],
            queue: vec![],
            callback_request: vec![],
            callback_header: None,
            callback_window: CallbackWindow::SameDay,
            callback_originators: vec![],
            correlation_headers: vec![],
            b2bua: true,
            bank_holidays: default_bank_holidays(),
            wait_edges: DEFAULT_EDGES.to_vec(),
            duration_edges: DEFAULT_EDGES.to_vec(),
            settle: 10 * crate::time::SECOND,
            ignore_unlisted: false,
        }
    }
}

/// The site's rules as the engine uses them: the [`SiteSpec`] (reached
/// through `Deref`), with the practices' numbers and the endpoints' user
/// parts as keyed hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    spec: SiteSpec,
    /// The practices, with the keyed hashes of their numbers.
    pub practices: Vec<Practice>,
    pub automated: Vec<Endpoint>,
    pub voicemail: Vec<Endpoint>,
    pub queue: Vec<Endpoint>,
    pub callback_request: Vec<Endpoint>,
}

impl std::ops::Deref for Site {
    type Target = SiteSpec;
    fn deref(&self) -> &SiteSpec {
        &self.spec
    }
}

/// For tests and tools that adjust a site: the address lists, timers and
/// edges apply at once; practices and endpoint lists are derived by
/// [`Site::new`] (change the hashed ones, `practices` and the endpoint
/// lists of `Site`, directly).
impl std::ops::DerefMut for Site {
    fn deref_mut(&mut self) -> &mut SiteSpec {
        &mut self.spec
    }
}

pub const DEFAULT_EDGES: [u32; 7] = [0, 30, 60, 120, 180, 240, 300];

/// Bank holidays in England and Wales, 2024-2030 (gov.uk; 2027 onwards as
/// announced or by the usual rules, substitute days included).
pub const BANK_HOLIDAYS_ENGLAND_WALES: &[&str] = &[
    "2024-01-01", "2024-03-29", "2024-04-01", "2024-05-06", "2024-05-27", "2024-08-26", "2024-12-25", "2024-12-26",
    "2025-01-01", "2025-04-18", "2025-04-21", "2025-05-05", "2025-05-26", "2025-08-25", "2025-12-25", "2025-12-26",
    "2026-01-01", "2026-04-03", "2026-04-06", "2026-05-04", "2026-05-25", "2026-08-31", "2026-12-25", "2026-12-28",
    "2027-01-01", "2027-03-26", "2027-03-29", "2027-05-03", "2027-05-31", "2027-08-30", "2027-12-27", "2027-12-28",
    "2028-01-03", "2028-04-14", "2028-04-17", "2028-05-01", "2028-05-29", "2028-08-28", "2028-12-25", "2028-12-26",
    "2029-01-01", "2029-03-30", "2029-04-02", "2029-05-07", "2029-05-28", "2029-08-27", "2029-12-25", "2029-12-26",
    "2030-01-01", "2030-04-19", "2030-04-22", "2030-05-06", "2030-05-27", "2030-08-26", "2030-12-25", "2030-12-26",
];

pub fn default_bank_holidays() -> BTreeSet<NaiveDate> {
    BANK_HOLIDAYS_ENGLAND_WALES
        .iter()
        .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("valid built-in date"))
        .collect()
}

impl Site {
    /// The engine's rules for a configured site, numbers hashed by `hasher`.
    pub fn new(spec: SiteSpec, hasher: &Hasher) -> Site {
        let eps = |l: &[String]| l.iter().map(|s| Endpoint::parse(s, hasher)).collect::<Vec<_>>();
        Site {
            practices: spec
                .practices
                .iter()
                .map(|p| Practice {
                    ods: p.ods.clone(),
                    name: p.name.clone(),
                    number_hashes: p.numbers.iter().map(|n| hasher.hash(n)).collect(),
                    codes: p.codes.clone(),
                })
                .collect(),
            automated: eps(&spec.automated),
            voicemail: eps(&spec.voicemail),
            queue: eps(&spec.queue),
            callback_request: eps(&spec.callback_request),
            spec,
        }
    }

    /// What the site was made from.
    pub fn spec(&self) -> &SiteSpec {
        &self.spec
    }

    /// A site with one practice and nothing else configured: every call from
    /// outside goes to that practice. Used by `replay` without `--config`.
    pub fn single(ods: &str, numbers: &[&str], hasher: &Hasher) -> Site {
        Site::new(SiteSpec::single(ods, numbers, hasher.country()), hasher)
    }

    /// The practice a dialled number belongs to, by hash.
    pub fn practice_for(&self, dialled_hashes: &[Option<&str>]) -> String {
        for p in &self.practices {
            if dialled_hashes
                .iter()
                .flatten()
                .any(|h| p.number_hashes.iter().any(|n| n == h))
            {
                return p.ods.clone();
            }
        }
        if self.practices.len() == 1 {
            self.practices[0].ods.clone()
        } else {
            UNASSIGNED.to_string()
        }
    }

    pub fn practice(&self, ods: &str) -> Option<&Practice> {
        self.practices.iter().find(|p| p.ods == ods)
    }

    /// Is the address inside the configured site (PBX, staff, automated)?
    pub fn is_site(&self, a: SocketAddr) -> bool {
        self.pbx.iter().any(|m| m.matches(a))
            || self.staff.iter().any(|m| m.matches(a))
            || self.automated.iter().any(|e| matches!(e, Endpoint::Addr(m) if m.matches(a)))
            || self.voicemail.iter().any(|e| matches!(e, Endpoint::Addr(m) if m.matches(a)))
            || self.queue.iter().any(|e| matches!(e, Endpoint::Addr(m) if m.matches(a)))
            || self.callback_request.iter().any(|e| matches!(e, Endpoint::Addr(m) if m.matches(a)))
            || self.callback_originators.iter().any(|m| m.matches(a))
    }

    /// Carrier side: configured trunk peers, or anything outside the site.
    /// With no network configured at all, the side that sent the first
    /// INVITE of a dialog is taken as the caller (see `call.rs`).
    pub fn is_carrier(&self, a: SocketAddr) -> bool {
        self.carrier.iter().any(|m| m.matches(a)) || (self.has_network() && !self.is_site(a))
    }

    /// Whether `ip` is in `network.carrier` (ports ignored: a carrier sends
    /// from several ports, and from ephemeral ones over TCP).
    pub fn is_configured_carrier(&self, ip: IpAddr) -> bool {
        self.carrier.iter().any(|m| match m {
            AddrMatch::Addr(a, _) => *a == ip,
            other => other.matches(SocketAddr::new(ip, 0)),
        })
    }

    /// With `network.carrier` configured, a message from an address that is
    /// neither the carrier nor the site, to anywhere but the carrier, comes
    /// from an unexpected sender: its INVITEs are never trunk legs.
    pub fn unexpected_source(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        !self.carrier.is_empty() && !self.is_configured_carrier(src.ip()) && !self.is_site(src) && !self.is_configured_carrier(dst.ip())
    }

    /// Whether any of the dialled hashes is a practice's number. `None`
    /// when no practice has numbers configured (nothing to compare with).
    pub fn is_practice_number(&self, dialled_hashes: &[Option<&str>]) -> Option<bool> {
        if self.practices.iter().all(|p| p.number_hashes.is_empty()) {
            return None;
        }
        Some(
            self.practices
                .iter()
                .any(|p| dialled_hashes.iter().flatten().any(|h| p.number_hashes.iter().any(|n| n == h))),
        )
    }

    /// Whether any address role is configured.
    pub fn has_network(&self) -> bool {
        !(self.carrier.is_empty() && self.pbx.is_empty() && self.staff.is_empty())
            || self.automated.iter().any(|e| matches!(e, Endpoint::Addr(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_forms() {
        let a = AddrMatch::parse("192.0.2.8/29").unwrap();
        assert!(a.matches(sa("192.0.2.15:5060")) && !a.matches(sa("192.0.2.16:5060")));
        let r = AddrMatch::parse("10.20.2.10-10.20.2.40").unwrap();
        assert!(r.matches(sa("10.20.2.10:1")) && r.matches(sa("10.20.2.40:1")) && !r.matches(sa("10.20.2.41:1")));
        let p = AddrMatch::parse("10.20.0.5:5080").unwrap();
        assert!(p.matches(sa("10.20.0.5:5080")) && !p.matches(sa("10.20.0.5:5060")));
        assert!(AddrMatch::parse("[2001:db8::1]:5060").unwrap().matches(sa("[2001:db8::1]:5060")));
        assert!(AddrMatch::parse("10.20.2.40-10.20.2.10").is_err());
        assert!(AddrMatch::parse("pbx.local").is_err());
        assert!(AddrMatch::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn extension_patterns() {
        let p = ExtPattern::parse("2XX").unwrap();
        assert!(p.matches("200") && p.matches("299") && !p.matches("300") && !p.matches("2000"));
        let q = ExtPattern::parse("3[0-4]N").unwrap();
        assert!(q.matches("342") && !q.matches("351") && !q.matches("341"));
        let r = ExtPattern::parse("9.").unwrap();
        assert!(r.matches("901632960000") && !r.matches("9"));
        assert!(ExtPattern::parse("2A").is_err());
        assert!(ExtPattern::parse("[]").is_err());
    }

    #[test]
    fn user_matches_and_unassigned() {
        let h = Hasher::new([3; 32], "44");
        assert!(UserMatch::new("IVR", &h).matches(Some("ivr"), None));
        assert!(UserMatch::new("vm*", &h).matches(Some("vm-201"), None));
        assert!(UserMatch::new("*99", &h).matches(Some("*99"), None));
        assert!(!UserMatch::new("*99", &h).matches(Some("199"), None));
        // numbers match in any written form, through the hash
        let n = UserMatch::new("01632 960999", &h);
        assert!(n.matches(None, Some(&h.hash("+441632960999"))));
        let mut site = Site::single("B82005", &["01632 960123"], &h);
        assert_eq!(site.practice_for(&[Some(&h.hash("nope"))]), "B82005");
        site.practices.push(Practice {
            ods: "B82099".into(),
            name: None,
            number_hashes: vec![h.hash("+44 1632 960777")],
            codes: OrgCodes::default(),
        });
        assert_eq!(site.practice_for(&[None, Some(&h.hash("01632960777"))]), "B82099");
        assert_eq!(site.practice_for(&[Some(&h.hash("01632960555"))]), UNASSIGNED);
    }

    #[test]
    fn endpoints_parse_as_address_or_user() {
        let h = Hasher::new([3; 32], "44");
        assert!(matches!(Endpoint::parse("10.20.0.6", &h), Endpoint::Addr(_)));
        assert!(matches!(Endpoint::parse("voicemail", &h), Endpoint::User(_)));
        assert!(matches!(Endpoint::parse("700", &h), Endpoint::User(_)));
    }

    #[test]
    fn built_in_bank_holidays() {
        let b = default_bank_holidays();
        assert_eq!(b.len(), 56);
        assert!(b.contains(&NaiveDate::from_ymd_opt(2026, 12, 28).unwrap()));
    }
}
