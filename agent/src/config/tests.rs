use super::*;

const EXAMPLE: &str = r#"
[[practice]]
ods = "B82005"
numbers = ["01632 960123", "01632 960124"]
[[practice]]
ods = "B82099"
numbers = ["+44 1632 960777"]
[network]
carrier = ["192.0.2.1", "192.0.2.8/29"]
pbx = ["10.20.0.5"]
staff = ["10.20.1.0/24", "10.20.2.10-10.20.2.40"]
automated = ["10.20.0.6"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("site.toml"))
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("should be rejected").problems
}

#[test]
fn the_documented_example_is_valid() {
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(c.site.practices.len(), 2);
    assert_eq!(c.site.practices[0].numbers, ["+441632960123", "+441632960124"]);
    assert_eq!(c.site.practices[1].numbers, ["+441632960777"]);
    assert_eq!(c.site.timezone, chrono_tz::Europe::London);
    assert_eq!(c.site.carrier.len(), 2);
    assert!(c.site.b2bua);
    let h = Hasher::new([5; 32], "44");
    let site = c.site(&h);
    assert_eq!(site.practice_for(&[Some(&h.hash("441632960777"))]), "B82099");
}

#[test]
fn errors_name_line_key_and_fix() {
    let bad = EXAMPLE.replace("\"192.0.2.8/29\"", "\"192.0.2.8/33\"");
    let p = problems(&bad);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].line, p[0].key.as_str()), (9, "network.carrier"));
    assert!(p[0].message.contains("192.0.2.8/33") && p[0].fix.contains("CIDR"));
    let shown = parse(&bad).unwrap_err().to_string();
    assert!(shown.starts_with("site.toml:9: network.carrier: "), "{shown}");
}

#[test]
fn several_problems_are_all_reported_in_line_order() {
    let bad = EXAMPLE
        .replace("B82099", "82099")
        .replace("\"01632 960124\"", "\"ext 12\"")
        .replace("\"10.20.0.6\"", "\"ivr\"");
    let p = problems(&bad);
    let keys: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(keys, [(4, "practice[1].numbers"), (6, "practice[2].ods"), (12, "network.automated")]);
    assert!(p.iter().all(|p| !p.fix.is_empty()));
}

#[test]
fn unknown_keys_and_wrong_types_point_at_the_line() {
    let p = problems(&EXAMPLE.replace("pbx = ", "pbxx = "));
    assert_eq!((p[0].line, p[0].key.as_str(), p[0].message.as_str()), (10, "network.pbxx", "unknown key"));
    assert!(p[0].fix.contains("did you mean `pbx`"), "{:?}", p[0]);
    let p = problems(&EXAMPLE.replace("pbx = [\"10.20.0.5\"]", "pbx = 10"));
    assert_eq!((p[0].line, p[0].key.as_str()), (10, "network.pbx"));
    assert!(p[0].fix.contains("type"));
    let p = problems("[[practice]\nods = 1");
    assert_eq!((p[0].line, p[0].key.as_str()), (1, "(top) (syntax)"));
    assert!(p[0].fix.contains("[name]"), "{:?}", p[0]);
}

#[test]
fn every_problem_is_reported_at_once_unknown_keys_included() {
    let bad = EXAMPLE
        .replace("ods = \"B82005\"", "ods = \"B82005\"\nodss = \"B82005\"")
        .replace("pbx = ", "pbxx = ")
        + "[store]\nretension = \"30d\"\n[nonsense]\nx = 1\n";
    let p = problems(&bad);
    let keys: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(keys, [(4, "practice[1].odss"), (11, "network.pbxx"), (15, "store.retension"), (16, "nonsense")], "{p:#?}");
    assert!(p[2].fix.contains("`retention`"), "{:?}", p[2]);
    // syntax errors: each, with the section it is in and a real fix
    let p = problems(&format!("{EXAMPLE}[capture]\ninterfaces = [\"eth0\"\nfilter = \"udp\n"));
    assert!(!p.is_empty());
    assert!(p.iter().all(|x| x.key == "[capture] (syntax)"), "{p:#?}");
    assert!(p.iter().all(|x| !x.fix.contains("fix the TOML syntax")), "{p:#?}");
}

#[test]
fn warnings_do_not_fail_a_configuration() {
    let c = parse("[[practice]]\nods = \"A00000\"\nnumbers = [\"01632 960000\"]\n[network]\n").unwrap();
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["practice[1].ods", "network"]);
    assert_eq!(c.warnings[1].line, 4);
    let shared = parse(&EXAMPLE.replace("+44 1632 960777", "01632 960124")).unwrap();
    assert!(shared.warnings[0].message.contains("also a number of B82005"), "{:?}", shared.warnings);
}

#[test]
fn numbers_ods_timezone_and_windows() {
    let p = problems(&format!("timezone = \"Europe/Londres\"\n{EXAMPLE}"));
    assert_eq!((p[0].line, p[0].key.as_str()), (1, "timezone"));
    let p = problems(&format!("{EXAMPLE}[callbacks]\nwindow = \"soon\"\n"));
    assert_eq!(p[0].key, "callbacks.window");
    let c = parse(&format!("{EXAMPLE}[callbacks]\nwindow = \"4h\"\nrequest = [\"callback\", \"*99\"]\n")).unwrap();
    assert_eq!(c.site.callback_window, CallbackWindow::Within(4 * 3600 * SECOND));
    assert!(problems("").iter().any(|p| p.key == "practice"));
}

#[test]
fn buckets_holidays_and_extensions() {
    let c = parse(&format!(
        "{EXAMPLE}staff_extensions = [\"2XX\"]\n[buckets]\nwait = [0, 20, 60]\n[calendar]\nextra_bank_holidays = [\"2025-06-02\"]\n"
    ))
    .unwrap();
    assert_eq!(c.site.wait_edges, [0, 20, 60]);
    assert!(c.site.bank_holidays.contains(&NaiveDate::from_ymd_opt(2025, 6, 2).unwrap()));
    assert!(c.site.bank_holidays.contains(&NaiveDate::from_ymd_opt(2025, 12, 25).unwrap()));
    let p = problems(&format!("{EXAMPLE}[buckets]\nwait = [30, 10]\n"));
    assert_eq!(p[0].key, "buckets.wait");
    let p = problems(&format!("{EXAMPLE}staff_extensions = [\"2AX\"]\n"));
    assert_eq!(p[0].key, "network.staff_extensions");
    let c = parse(&format!("{EXAMPLE}pickup_codes = [\"*8\", \"**2XX\"]\n")).unwrap();
    assert_eq!(c.site.pickup_codes.iter().map(|p| p.as_str()).collect::<Vec<_>>(), ["*8", "**2XX"]);
    let p = problems(&format!("{EXAMPLE}pickup_codes = [\"*8\", \"pickup\"]\n"));
    assert_eq!(p[0].key, "network.pickup_codes");
    assert!(p[0].fix.contains("\"*8\""), "{:?}", p[0]);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90"), Some(90 * SECOND));
    assert_eq!(parse_duration("1h30m"), Some(90 * MINUTE));
    assert_eq!(parse_duration("10s"), Some(10 * SECOND));
    assert_eq!(parse_duration("soon"), None);
    // the documented capture.read_timeout default is in milliseconds
    assert_eq!(parse_duration("100ms"), Some(100_000));
    assert_eq!(parse_duration("1s500ms"), Some(1_500_000));
    for bad in ["ms", "5 s", "3w", "1h30", "-5s", ""] {
        assert!(parse_duration(bad).is_none(), "{bad}");
    }
    assert_eq!(parse_duration("5"), Some(5 * SECOND));
    assert_eq!(parse_duration("5x"), None);
}

#[test]
fn the_example_in_the_documentation_is_valid() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md")).unwrap();
    let start = doc.find("```toml\n").expect("a toml block") + 8;
    let end = start + doc[start..].find("```").unwrap();
    let c = parse(&doc[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.site.practices[0].codes.pcn.as_deref(), Some("U12345"));
    assert_eq!(c.site.voicemail, ["10.20.0.9", "vm*"]);
    assert_eq!(c.site.callback_request, ["callback", "*99"]);
}

#[test]
fn agent_sections_from_the_issue_and_defaults() {
    let c = parse(&format!(
        "{EXAMPLE}[capture]\ninterfaces = [\"eth1\"]\n[store]\ndir = \"/var/lib/cbt-agent\"\n[status]\nlisten = \"127.0.0.1:9465\"\n"
    ))
    .unwrap();
    let a = &c.agent;
    assert_eq!(a.interfaces, ["eth1"]);
    assert_eq!(a.store_dir, PathBuf::from("/var/lib/cbt-agent"));
    assert_eq!(a.status_listen, Listen::Tcp("127.0.0.1:9465".parse().unwrap()));
    assert_eq!((a.snaplen, a.immediate, a.read_timeout_ms), (65_535, false, 20));
    assert_eq!(a.filter, None);
    let u = parse(&format!("{EXAMPLE}[status]\nlisten = \"unix:/run/cbt-agent/status.sock\"\n[hep]\nlisten = \"127.0.0.1:9060\"\n")).unwrap();
    assert_eq!(u.agent.status_listen, Listen::Unix(PathBuf::from("/run/cbt-agent/status.sock")));
    assert!(u.agent.filter_for(true).ends_with("and not (udp dst port 9060)"), "{}", u.agent.filter_for(true));
    let p = problems(&format!("{EXAMPLE}[capture]\nsnaplen = 100\nbuffer_size = \"lots\"\n"));
    assert_eq!(p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["capture.snaplen", "capture.buffer_size"]);
    assert_eq!(parse_size("16MiB"), Some(16 << 20));
    assert_eq!(parse_size("2GB"), Some(2_000_000_000));
    assert_eq!(parse_size("16 bananas"), None);
}

#[test]
fn the_default_filter_passes_sip_and_fragments_and_not_rtp() {
    use cbt_proto::synth::frames;
    let f = default_filter(&DEFAULT_SIP_PORTS, Some(9060), true);
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
    let bpf = cap.compile(&f, true).unwrap_or_else(|e| panic!("{e}: {f}"));
    let a = "192.0.2.1:5060".parse().unwrap();
    let b = "10.20.0.5:5060".parse().unwrap();
    let sip = vec![b'x'; 3000];
    assert!(bpf.filter(&frames::udp(a, b, 1, b"INVITE")));
    let frags = frames::udp_fragments_v4(a, b, 7, &sip, 1400);
    assert!(frags.len() > 1 && frags.iter().all(|fr| bpf.filter(fr)), "every fragment passes");
    let rtp = frames::udp("192.0.2.1:40000".parse().unwrap(), "10.20.0.5:30000".parse().unwrap(), 2, &[0x80; 172]);
    assert!(!bpf.filter(&rtp), "RTP is filtered out");
    let hep = frames::udp("10.20.0.5:40000".parse().unwrap(), "10.20.0.9:9060".parse().unwrap(), 3, b"HEP3");
    assert!(!bpf.filter(&hep), "our own HEP input is not captured twice");
    let cooked = default_filter(&DEFAULT_SIP_PORTS, Some(9060), false);
    for link in [pcap::Linktype(113), pcap::Linktype(276)] {
        pcap::Capture::dead(link).unwrap().compile(&cooked, true).unwrap();
    }
}

#[test]
fn hostile_traffic_settings_and_their_errors() {
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(c.guard, GuardSettings::default());
    assert_eq!(c.guard.hep_senders().len(), 2, "loopback only by default");
    let c = parse(&format!(
        "{EXAMPLE}[hep]\nlisten = \"0.0.0.0:9060\"\nallow = [\"10.20.0.5\", \"10.20.9.0/24\"]\n[scanners]\nuser_agents = [\"Friendly-Scanner\", \"evil\"]\nburst = 20\nburst_window = \"5s\"\n[limits]\nengine_memory = \"48MiB\"\nqueue_memory = \"16MiB\"\n"
    ))
    .unwrap();
    let g = &c.guard;
    assert_eq!(g.scanner_agents, ["friendly-scanner", "evil"]);
    assert_eq!((g.burst, g.burst_window, g.engine_memory, g.queue_memory), (20, 5 * SECOND, 48 << 20, 16 << 20));
    let senders = g.hep_senders();
    let is = |a: &str| senders.iter().any(|m| m.matches(a.parse().unwrap()));
    assert!(is("127.0.0.1:1") && is("[::1]:1") && is("10.20.0.5:40000") && is("10.20.9.77:1"));
    assert!(!is("127.0.0.66:1") && !is("203.0.113.9:5060"));
    assert_eq!(g.engine().memory_limit, 48 << 20);
    let bad = format!(
        "{EXAMPLE}[hep]\nallow = [\"10.20.0.5:9060\", \"pbx\"]\n[scanners]\nuser_agents = [\"\"]\nburst = 2\nburst_window = \"1h\"\n[limits]\nengine_memory = \"1MiB\"\nqueue_memory = \"lots\"\n"
    );
    let p = problems(&bad);
    let keys: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        keys,
        [(14, "hep.allow"), (14, "hep.allow"), (16, "scanners.user_agents"), (17, "scanners.burst"), (18, "scanners.burst_window"), (20, "limits.engine_memory"), (21, "limits.queue_memory")]
    );
    assert!(p.iter().all(|p| !p.fix.is_empty()), "{p:?}");
    assert!(p[0].message.contains("port") && p[5].fix.contains("64MiB"), "{p:?}");
    let shown = parse(&bad).unwrap_err().to_string();
    assert!(shown.contains("site.toml:20: limits.engine_memory: `1MiB` is out of range; fix: write a size from 8 MiB to 4096 MiB"), "{shown}");
    let p = problems(&format!("{EXAMPLE}[limits]\nmemory = \"64MiB\"\n"));
    assert!(p[0].message.contains("unknown field"), "{p:?}");
}

#[test]
fn call_records_and_day_figures_have_their_own_retentions() {
    const DAY: Micros = 24 * 3600 * SECOND;
    let c = parse(EXAMPLE).unwrap();
    assert_eq!((c.agent.call_retention, c.agent.retention), (62 * DAY, 800 * DAY), "the defaults");
    // a file of an earlier release: its `retention` was the calls'
    let c = parse(&format!("{EXAMPLE}[store]\nretention = \"30d\"\n")).unwrap();
    assert_eq!((c.agent.call_retention, c.agent.retention), (30 * DAY, 30 * DAY));
    let c = parse(&format!("{EXAMPLE}[store]\nretention = \"400d\"\n")).unwrap();
    assert_eq!((c.agent.call_retention, c.agent.retention), (62 * DAY, 400 * DAY));
    let c = parse(&format!("{EXAMPLE}[store]\ncall_retention = \"120d\"\n")).unwrap();
    assert_eq!(c.agent.call_retention, 120 * DAY);
    let p = problems(&format!("{EXAMPLE}[store]\nretention = \"90d\"\ncall_retention = \"120d\"\n"));
    assert_eq!((p.len(), p[0].key.as_str(), p[0].line), (1, "store.call_retention", EXAMPLE.lines().count() + 3), "{p:?}");
    assert!(p[0].message.contains("longer than store.retention"), "{p:?}");
    let p = problems(&format!("{EXAMPLE}[store]\ncall_retention = \"2h\"\n"));
    assert_eq!(p[0].key, "store.call_retention", "{p:?}");
    let p = problems(&format!("{EXAMPLE}[store]\nretention = \"12h\"\n"));
    assert_eq!(p[0].key, "store.retention", "{p:?}");
}

#[test]
fn calls_to_unlisted_numbers_are_unassigned_or_another_agents() {
    assert!(!parse(EXAMPLE).unwrap().site.ignore_unlisted, "Unassigned's by default");
    let c = parse(&format!("{EXAMPLE}[calls]\nunlisted = \"ignore\"\n")).unwrap();
    assert!(c.site.ignore_unlisted);
    let p = problems(&format!("{EXAMPLE}[calls]\nunlisted = \"drop\"\n"));
    assert_eq!((p.len(), p[0].key.as_str()), (1, "calls.unlisted"), "{p:?}");
    assert!(p[0].fix.contains("\"ignore\""), "{p:?}");
}

#[test]
fn an_upgrade_never_prunes_a_call_the_release_before_would_have_kept() {
    const DAY: Micros = 24 * 3600 * SECOND;
    let now = cbt_proto::Timestamp(1_800_000_000 * SECOND);
    // 0.1.0 kept call records 400 days by default
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(c.agent.call_cut(now, None), now.add(-62 * DAY), "a new store: the new default");
    let upgraded = now.add(-10 * DAY);
    assert_eq!(c.agent.call_cut(now, Some(upgraded)), now.add(-400 * DAY), "upgraded 10 days ago: 0.1.0's 400 days");
    assert_eq!(c.agent.call_cut(now, Some(now.add(-401 * DAY))), now.add(-62 * DAY), "nothing 0.1.0 stored is within its 400 days any more");
    // an old file's own retention was the calls'
    let c = parse(&format!("{EXAMPLE}[store]\nretention = \"500d\"\n")).unwrap();
    assert_eq!(c.agent.call_cut(now, Some(upgraded)), now.add(-500 * DAY));
    // a call_retention set by the supplier is theirs to choose
    let c = parse(&format!("{EXAMPLE}[store]\ncall_retention = \"30d\"\n")).unwrap();
    assert_eq!(c.agent.call_cut(now, Some(upgraded)), now.add(-30 * DAY));
}
