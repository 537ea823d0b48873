//! A minimal HTTP/1.1 GET for the local status API (TCP on loopback or a
//! Unix socket). Nothing here leaves the machine, and no TLS is involved,
//! so a dozen lines serve better than a client library with a TLS stack.

use crate::config::Listen;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::time::Duration;

/// Whether the failure was "nobody is listening" (the daemon is not running).
pub fn is_not_running(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound))
    })
}

/// GETs `path` and returns the body of a 200 response.
pub fn get(listen: &Listen, path: &str) -> Result<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    match listen {
        Listen::Tcp(a) => {
            let mut s = std::net::TcpStream::connect_timeout(a, Duration::from_secs(3)).with_context(|| format!("cannot reach cbt-agent at {a}"))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(request.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
        Listen::Unix(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p).with_context(|| format!("cannot reach cbt-agent at {}", p.display()))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(request.as_bytes())?;
            s.read_to_end(&mut raw)?;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_string()
    };
    if !status.contains(" 200 ") {
        bail!("{status}: {}", body.trim());
    }
    Ok(body)
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("malformed chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).context("malformed chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        s = rest.get(n + 2..).unwrap_or("");
    }
}
