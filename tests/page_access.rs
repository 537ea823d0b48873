//! The practice page from the manager's desk: with `[page.lan]` on (bound
//! to another loopback address, 127.0.0.77, standing in for the LAN; never
//! a real interface), nothing answers there without the password or the
//! token, it speaks HTTPS only with the configured certificate, the JSON
//! API and `/metrics` are not there unless `page.lan.api`, and the loopback
//! listener answers as before, without a password. The password hash and
//! the token come from `cbt-agent page-password`.

use cbt_agent::config::Listen;
use cbt_proto::call::CallRecord;
use cbt_tests::daemon::agent_bin;
use cbt_tests::page::{fill_store, serve_store};
use cbt_tests::workspace_root;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};

const PASSWORD: &str = "surgery phones 2026";

/// HTTP status of a GET with curl (`000` when no HTTP answer came).
fn curl(url: &str, cacert: &Path, auth: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", "--max-time", "30", "--cacert"])
        .arg(cacert)
        .args(auth)
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind(format!("{ip}:0")).unwrap().local_addr().unwrap().port()
}

#[test]
fn lan_listener_needs_the_password_or_token() {
    for tool in ["curl", "openssl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            assert!(!cbt_tests::in_ci(), "{tool} is missing (scripts/setup-deps installs it)");
            eprintln!("SKIP: no {tool}");
            return;
        }
    }
    let root = workspace_root();
    let tmp = root.join("target/page-access-test");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let ip = "127.0.0.77";

    // a certificate for the LAN address
    let (cert, key) = (tmp.join("page.crt"), tmp.join("page.key"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=cbt-agent test"])
        .args(["-addext", &format!("subjectAltName=IP:{ip}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl could not make a certificate");

    // the password hash and a token, as the operator makes them
    let mut child = Command::new(agent_bin()).arg("page-password").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let out = Command::new(agent_bin()).args(["page-password", "--token"]).output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.len() >= 40, "{token}");
    std::fs::write(tmp.join("page-token"), format!("{token}\n")).unwrap();

    // a store with the morning's calls
    let fixture = root.join("tests/fixtures/morning.toml");
    let config = cbt_agent::config::Config::load(&fixture).unwrap();
    let (_, book) = cbt_agent::replay::calls_of(&config, [7; 32], &[root.join("tests/fixtures/morning.pcap")]);
    let records: Vec<CallRecord> = book.records().into_iter().cloned().collect();
    fill_store(&tmp.join("store"), &records);
    let site = std::fs::read_to_string(&fixture).unwrap();

    for api in [false, true] {
        let lan: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let extra = format!(
            "[page]\nnational = \"{}\"\n[page.lan]\nlisten = \"{lan}\"\npassword_hash = \"{hash}\"\ntoken_file = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\napi = {api}\n",
            root.join("packaging/national.toml").display(),
            tmp.join("page-token").display(),
            cert.display(),
            key.display()
        );
        let (mut daemon, status) = serve_store(&site, &tmp, &extra);
        // the LAN listener comes up beside the loopback one
        let mut up = false;
        for _ in 0..100 {
            if curl(&format!("https://{lan}/"), &cert, &[]) != "000" {
                up = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(up, "the LAN listener did not come up: {}", std::fs::read_to_string(&daemon.log).unwrap_or_default());
        let pages = ["/", "/?period=week&date=2025-11-04", "/staffing", "/report?month=2025-11"];
        let apis = ["/api/staffing", "/status", "/metrics", "/healthz", "/api/calls", "/api/days"];
        let basic = format!("manager:{PASSWORD}");
        let bearer = format!("Authorization: Bearer {token}");
        let wrong = "manager:not the password".to_string();
        for path in pages.iter().chain(&apis) {
            let url = format!("https://{lan}{path}");
            assert_eq!(curl(&url, &cert, &[]), "401", "{path} without a password");
            assert_eq!(curl(&url, &cert, &["-u", &wrong]), "401", "{path} with a wrong password");
            assert_eq!(curl(&url, &cert, &["-H", "Authorization: Bearer not-the-token-at-all"]), "401", "{path} with a wrong token");
            let want = if pages.contains(path) || api { "200" } else { "404" };
            assert_eq!(curl(&url, &cert, &["-u", &basic]), want, "{path} with the password (api = {api})");
            assert_eq!(curl(&url, &cert, &["-H", &bearer]), want, "{path} with the token (api = {api})");
            // plain HTTP gets no page
            assert_ne!(curl(&format!("http://{lan}{path}"), &cert, &["-u", &basic]), "200", "{path} over plain HTTP");
            // the loopback listener answers as before
            assert!(cbt_agent::client::get(&Listen::Tcp(status), path).is_ok(), "{path} on loopback");
        }
        // the log names the peer of a wrong password, never the password
        daemon.stop().unwrap();
        let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
        assert!(log.contains("wrong password or token"), "{log}");
        assert!(!log.contains("not the password") && !log.contains(PASSWORD) && !log.contains(&token), "the log shows a credential");
        std::fs::remove_file(&daemon.log).ok();
    }
}
