//! The one thing the call layer reads from a message body: where an SDP
//! offer sends its audio.
//!
//! A PBX that does not anchor media (a signalling-only B2BUA, or "direct
//! media") offers each handset the caller's own SDP, so the handset leg's
//! INVITE names the same connection address and audio port as the trunk
//! leg's INVITE did. That tells apart two calls from one withheld number to
//! the same DDI, which nothing in the headers can. A PBX that anchors media
//! offers its own address and a port of its own per leg: no match, and the
//! other rules decide as before.
//!
//! Only the address and port are read (not `o=`): a B2BUA that passes the
//! media through passes those unchanged whether or not it rewrites the
//! origin line, and two calls in progress never share them. The key is a
//! hash, kept in memory only (not journalled, not in the snapshot).

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU64;

/// Longest body read: an SDP offer is a few hundred bytes; a multipart body
/// (SDP with ISUP, as some UK carriers send) a little more.
const MAX_BODY: usize = 8 * 1024;

/// A key for the connection address (`c=` of the first audio stream, else
/// the session's) and port of the first audio stream (`m=audio`) of an SDP
/// body, or of the SDP part of a multipart body. `None` when there is no
/// audio stream, or it is disabled (port 0) or on hold (`0.0.0.0`, `::`),
/// or its address is missing.
pub fn media_key(body: &[u8]) -> Option<NonZeroU64> {
    // longer than read: up to the last whole line
    let body = match body.get(..MAX_BODY) {
        Some(head) => &head[..memchr::memrchr(b'\n', head).map_or(0, |i| i + 1)],
        None => body,
    };
    let mut session_c: Option<&[u8]> = None;
    let mut audio: Option<(&[u8], Option<&[u8]>)> = None; // (port, its own c=)
    // which part the lines are in: the session's (before any m=), the
    // first audio stream's, or another stream's
    let mut part = Part::Session;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"m=") {
            if audio.is_some() {
                break; // the first audio stream is all we read
            }
            let mut f = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
            part = Part::Other;
            if f.next() == Some(b"audio".as_slice()) {
                let port = f.next()?;
                audio = Some((port.split(|&b| b == b'/').next().unwrap_or(port), None));
                part = Part::Audio;
            }
        } else if let Some(rest) = line.strip_prefix(b"c=") {
            let addr = connection_address(rest);
            match (part, &mut audio) {
                (Part::Session, _) => session_c = session_c.or(addr),
                (Part::Audio, Some((_, c))) => *c = c.or(addr),
                _ => {}
            }
        }
    }
    let (port, media_c) = audio?;
    let addr = media_c.or(session_c)?;
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    if port == 0 || addr == b"0.0.0.0" || addr == b"::" {
        return None;
    }
    let mut h = ahash::RandomState::with_seeds(0x6d65_6469, 0x6173_6470, 0x6362_7461, 0x6b65_7973).build_hasher();
    for b in addr {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.write_u16(port);
    NonZeroU64::new(h.finish() | 1)
}

#[derive(Clone, Copy)]
enum Part {
    Session,
    Audio,
    Other,
}

/// The address of a `c=` line's value (`IN IP4 192.0.2.1/127`).
fn connection_address(v: &[u8]) -> Option<&[u8]> {
    let mut f = v.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let (_net, _kind, addr) = (f.next()?, f.next()?, f.next()?);
    let addr = addr.split(|&b| b == b'/').next().unwrap_or(addr);
    (!addr.is_empty()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::media_key;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 31000 RTP/AVP 8 0 101\r\na=sendrecv\r\n";

    fn key(s: &str) -> Option<u64> {
        media_key(s.as_bytes()).map(|k| k.get())
    }

    #[test]
    fn the_same_address_and_port_give_the_same_key_whatever_else_differs() {
        let k = key(OFFER).expect("an offer has a key");
        // a B2BUA passing the media through may rewrite the origin and the
        // codec list, use bare LFs or a media-level c= with the same address
        let passed = "v=0\no=pbx 99 2 IN IP4 10.0.0.5\ns=pbx\nt=0 0\nm=audio 31000 RTP/AVP 0\nc=IN IP4 198.51.100.7\na=ptime:20\n";
        assert_eq!(key(passed), Some(k));
        assert_ne!(key(&OFFER.replace("31000", "31002")), Some(k), "another port");
        assert_ne!(key(&OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 198.51.100.8")), Some(k), "another address");
    }

    #[test]
    fn the_first_audio_stream_and_its_own_address_count() {
        let sdp = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 192.0.2.9\r\nm=audio 6000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2/127\r\nm=audio 7000 RTP/AVP 0\r\n";
        let want = "v=0\r\nc=IN IP4 192.0.2.2\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(key(sdp), key(want));
        assert!(key(want).is_some());
        // another stream's own address is not the session's
        let video_first = "v=0\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 192.0.2.9\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(key(video_first), None);
        let ipv6 = "v=0\r\nc=IN IP6 2001:DB8::7\r\nm=audio 6000/2 RTP/AVP 0\r\n";
        assert_eq!(key(ipv6), key("v=0\r\nc=IN IP6 2001:db8::7\r\nm=audio 6000 RTP/AVP 0\r\n"));
    }

    #[test]
    fn a_multipart_body_is_read_for_its_sdp_part() {
        let multipart = format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\n{OFFER}--b1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\r\n\x01\x00\x60\x01\x0a\x00\x02\x09\x07m=\r\n--b1--\r\n"
        );
        assert_eq!(key(&multipart), key(OFFER));
    }

    #[test]
    fn a_line_cut_at_the_reading_limit_is_not_read() {
        // `m=audio 31000` cut to `m=audio 310` would be another port
        let mut sdp = String::from("v=0\r\nc=IN IP4 198.51.100.7\r\n");
        while sdp.len() < super::MAX_BODY - 11 {
            sdp.push_str("a=x-filler\r\n");
        }
        sdp.truncate(super::MAX_BODY - 11);
        sdp.push_str("\r\nm=audio 31000 RTP/AVP 0\r\n");
        assert!(sdp.len() > super::MAX_BODY);
        assert_eq!(key(&sdp), None);
        // within the limit it is read
        let early = format!("v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 31000 RTP/AVP 0\r\n{}", "a=x-filler\r\n".repeat(800));
        assert!(early.len() > super::MAX_BODY);
        assert_eq!(key(&early), key(OFFER));
    }

    #[test]
    fn no_usable_audio_gives_no_key() {
        for body in [
            "",
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\n",
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 0 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 6000 RTP/AVP 0\r\n",
            "v=0\r\nm=audio 6000 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4\r\nm=audio 6000 RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio seven RTP/AVP 0\r\n",
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio\r\n",
            "<xml>not sdp</xml>",
        ] {
            assert_eq!(key(body), None, "{body:?}");
        }
    }
}
