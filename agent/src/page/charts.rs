//! Server-rendered SVG charts: no script, scaled by their viewBox to the
//! width of a phone or a sheet of paper, every mark with a `<title>` and
//! every chart with a text alternative (`role="img"`, `aria-label`); the
//! numbers themselves are in the tables beside them.

use maud::{html, Markup};

/// Outcome colours, in [`cbt_proto::period::OUTCOMES`] order (answered,
/// missed, ended in IVR, callback requested), and their names for people.
pub const OUTCOME_COLOURS: [&str; 4] = ["#2e7d32", "#c62828", "#757575", "#1565c0"];
pub const OUTCOME_NAMES: [&str; 4] = ["answered", "missed", "ended in IVR", "callback requested"];

/// A coordinate, short.
fn f(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

/// A round axis maximum at or above `v` (1, 2, 5 x 10^k).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    // quarters of these are round too
    for m in [1.0, 1.2, 1.6, 2.0, 2.4, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn legend(x0: f64, y: f64, names: &[&str], colours: &[&str]) -> Markup {
    let xs: Vec<f64> = names
        .iter()
        .scan(x0, |x, name| {
            let at = *x;
            *x += 22.0 + name.len() as f64 * 6.0;
            Some(at)
        })
        .collect();
    html! {
        @for ((name, colour), x) in names.iter().zip(colours).zip(xs) {
            rect x=(f(x)) y=(f(y - 9.0)) width="10" height="10" fill=(colour) {}
            text x=(f(x + 14.0)) y=(f(y)) font-size="11" { (name) }
        }
    }
}

/// Stacked segments from a base upwards: (top, height) of each part.
fn stack(base: f64, scale: f64, parts: &[u64; 4]) -> [(f64, f64); 4] {
    let mut y = base;
    parts.map(|v| {
        let h = scale * v as f64;
        y -= h;
        (y, h)
    })
}

/// Vertical bars, each stacked by outcome. `rows`: (label, counts in
/// outcome order).
pub fn stacked_bars(id: &str, caption: &str, rows: &[(String, [u64; 4])]) -> Markup {
    let (w, h, left, top, bottom) = (520.0, 250.0, 34.0, 16.0, 62.0);
    let plot_h = h - top - bottom;
    let max = nice_max(rows.iter().map(|(_, v)| v.iter().sum::<u64>()).max().unwrap_or(0) as f64);
    let n = rows.len().max(1) as f64;
    let slot = (w - left - 8.0) / n;
    let bar = (slot * 0.7).min(60.0);
    let total_label = |v: &[u64; 4]| v.iter().sum::<u64>();
    html! {
        svg id=(id) class="chart" viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(caption) xmlns="http://www.w3.org/2000/svg" {
            title { (caption) }
            @for i in 0..=4 {
                @let y = top + plot_h * (1.0 - i as f64 / 4.0);
                line x1=(f(left)) x2=(f(w - 4.0)) y1=(f(y)) y2=(f(y)) stroke="#ddd" stroke-width="1" {}
                text x=(f(left - 4.0)) y=(f(y + 4.0)) font-size="10" text-anchor="end" fill="#555" { (f(max * i as f64 / 4.0)) }
            }
            @for (i, (label, v)) in rows.iter().enumerate() {
                @let x = left + slot * i as f64 + (slot - bar) / 2.0;
                @let parts = stack(top + plot_h, plot_h / max, v);
                @let y = parts[3].0;
                g class="bar" data-label=(label) data-total=(total_label(v)) {
                    @for (k, (py, hh)) in parts.iter().enumerate() {
                        @if v[k] > 0 {
                            rect x=(f(x)) y=(f(*py)) width=(f(bar)) height=(f(*hh)) fill=(OUTCOME_COLOURS[k]) data-outcome=(cbt_proto::period::OUTCOMES[k]) data-value=(v[k]) {
                                title { (label) ": " (v[k]) " " (OUTCOME_NAMES[k]) }
                            }
                        }
                    }
                    @if total_label(v) > 0 {
                        text x=(f(x + bar / 2.0)) y=(f(y - 3.0)) font-size="10" text-anchor="middle" { (total_label(v)) }
                    }
                    @let (l1, l2) = label.split_once('-').map_or((label.as_str(), ""), |(a, b)| (a, b));
                    text x=(f(x + bar / 2.0)) y=(f(top + plot_h + 13.0)) font-size=(if n > 12.0 { "8" } else { "10" }) text-anchor="middle" {
                        (l1)
                        @if !l2.is_empty() { tspan x=(f(x + bar / 2.0)) dy="11" { "–" (l2) } }
                    }
                }
            }
            (legend(left, h - 8.0, &OUTCOME_NAMES, &OUTCOME_COLOURS))
        }
    }
}

/// Answered and abandoned callers by how long they waited (bucket labels).
pub fn wait_histogram(id: &str, caption: &str, labels: &[String], answered: &[u64], abandoned: &[u64]) -> Markup {
    let (w, h, left, top, bottom) = (520.0, 220.0, 34.0, 16.0, 52.0);
    let plot_h = h - top - bottom;
    let max = nice_max(answered.iter().chain(abandoned).copied().max().unwrap_or(0) as f64);
    let n = labels.len().max(1) as f64;
    let slot = (w - left - 8.0) / n;
    let bar = (slot * 0.38).min(30.0);
    let colours = ["#2e7d32", "#ef6c00"];
    html! {
        svg id=(id) class="chart" viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(caption) xmlns="http://www.w3.org/2000/svg" {
            title { (caption) }
            @for i in 0..=4 {
                @let y = top + plot_h * (1.0 - i as f64 / 4.0);
                line x1=(f(left)) x2=(f(w - 4.0)) y1=(f(y)) y2=(f(y)) stroke="#ddd" stroke-width="1" {}
                text x=(f(left - 4.0)) y=(f(y + 4.0)) font-size="10" text-anchor="end" fill="#555" { (f(max * i as f64 / 4.0)) }
            }
            @for (i, label) in labels.iter().enumerate() {
                @let x = left + slot * i as f64 + slot / 2.0 - bar;
                @for (k, series) in [answered, abandoned].iter().enumerate() {
                    @let v = series.get(i).copied().unwrap_or(0);
                    @let hh = plot_h * v as f64 / max;
                    @if v > 0 {
                        rect x=(f(x + bar * k as f64)) y=(f(top + plot_h - hh)) width=(f(bar)) height=(f(hh)) fill=(colours[k]) data-value=(v) {
                            title { (label) " s: " (v) (if k == 0 { " answered" } else { " gave up waiting" }) }
                        }
                    }
                }
                text x=(f(x + bar)) y=(f(top + plot_h + 13.0)) font-size="9" text-anchor="middle" { (label.replace('_', "-")) }
            }
            text x=(f(w - 8.0)) y=(f(top + plot_h + 27.0)) font-size="9" text-anchor="end" fill="#555" { "seconds waited" }
            (legend(left, h - 8.0, &["answered", "gave up waiting"], &colours))
        }
    }
}

/// A practice's outcome mix beside England's: 100% bars. `rows`: (label,
/// shares in percent in outcome order).
pub fn mix_bars(id: &str, caption: &str, rows: &[(String, [f64; 4])]) -> Markup {
    let (w, left, bar_h, gap) = (520.0, 100.0, 26.0, 10.0);
    let h = 18.0 + rows.len() as f64 * (bar_h + gap) + 24.0;
    let plot_w = w - left - 10.0;
    html! {
        svg id=(id) class="chart" viewBox=(format!("0 0 {w} {}", f(h))) role="img" aria-label=(caption) xmlns="http://www.w3.org/2000/svg" {
            title { (caption) }
            @for (i, (label, shares)) in rows.iter().enumerate() {
                @let y = 10.0 + i as f64 * (bar_h + gap);
                @let total: f64 = shares.iter().sum();
                @let widths = shares.map(|v| if total > 0.0 { plot_w * v / total } else { 0.0 });
                text x=(f(left - 6.0)) y=(f(y + bar_h / 2.0 + 4.0)) font-size="11" text-anchor="end" { (label) }
                @for k in 0..4 {
                    @let ww = widths[k];
                    @let x = left + widths[..k].iter().sum::<f64>();
                    @if ww > 0.0 {
                        rect x=(f(x)) y=(f(y)) width=(f(ww)) height=(f(bar_h)) fill=(OUTCOME_COLOURS[k]) {
                            title { (label) ": " (format!("{:.1}", shares[k])) "% " (OUTCOME_NAMES[k]) }
                        }
                        @if ww > 34.0 {
                            text x=(f(x + ww / 2.0)) y=(f(y + bar_h / 2.0 + 4.0)) font-size="10" text-anchor="middle" fill="#fff" { (format!("{:.0}%", shares[k])) }
                        }
                    }
                }
            }
            (legend(left, h - 6.0, &OUTCOME_NAMES, &OUTCOME_COLOURS))
        }
    }
}

/// Seven weekdays by 48 half-hours of arrivals per hour, hours with calls
/// (any day) shown; darker is busier.
pub fn heatmap(id: &str, caption: &str, weekdays: &[&str; 7], values: &[[f64; 48]; 7]) -> Markup {
    let busy: Vec<usize> = (0..48).filter(|s| values.iter().any(|d| d[*s] > 0.0)).collect();
    let (first, last) = match (busy.first(), busy.last()) {
        (Some(a), Some(b)) => ((a / 2) * 2, (b / 2) * 2 + 1),
        _ => (16, 37),
    };
    let cols = last - first + 1;
    let (left, top, cell_h) = (34.0, 16.0, 22.0);
    let w = 640.0;
    let cell_w = (w - left - 6.0) / cols as f64;
    let h = top + 7.0 * cell_h + 30.0;
    let max = values.iter().flat_map(|d| d.iter()).cloned().fold(0.0, f64::max).max(1e-9);
    html! {
        svg id=(id) class="chart" viewBox=(format!("0 0 {w} {}", f(h))) role="img" aria-label=(caption) xmlns="http://www.w3.org/2000/svg" {
            title { (caption) }
            @for (d, name) in weekdays.iter().enumerate() {
                @let y = top + d as f64 * cell_h;
                text x=(f(left - 4.0)) y=(f(y + cell_h / 2.0 + 4.0)) font-size="10" text-anchor="end" { (&name[..3]) }
                @for s in first..=last {
                    @let v = values[d][s];
                    @let x = left + (s - first) as f64 * cell_w;
                    @let shade = if v > 0.0 { 0.12 + 0.88 * v / max } else { 0.0 };
                    rect x=(f(x)) y=(f(y)) width=(f(cell_w - 1.0)) height=(f(cell_h - 1.0)) fill=(if v > 0.0 { "#0d47a1" } else { "#f2f2f2" }) fill-opacity=(if v > 0.0 { format!("{shade:.2}") } else { "1".into() }) data-weekday=(name) data-start=(cbt_proto::staffing::slot_start(s)) data-value=(format!("{v:.1}")) {
                        title { (name) " " (cbt_proto::staffing::slot_start(s)) ": " (format!("{v:.1}")) " calls an hour" }
                    }
                }
            }
            @for s in (first..=last).step_by(2) {
                @let x = left + (s - first) as f64 * cell_w;
                text x=(f(x)) y=(f(top + 7.0 * cell_h + 12.0)) font-size="9" { (cbt_proto::staffing::slot_start(s)) }
            }
            text x=(f(w - 6.0)) y=(f(h - 4.0)) font-size="9" text-anchor="end" fill="#555" { "darker: more calls an hour (busiest " (format!("{max:.1}")) ")" }
        }
    }
}

/// One half-hour of a staffing curve: start, calls an hour, people by
/// Erlang C and by Erlang A.
pub type CurvePoint = (String, f64, u32, Option<u32>);

/// A day's staffing curve: arrivals per hour as bars (right axis), people
/// needed by Erlang C as a step line and by Erlang A dashed (left axis).
pub fn staffing_curve(id: &str, caption: &str, slots: &[CurvePoint]) -> Markup {
    let busy: Vec<usize> = slots.iter().enumerate().filter(|(_, s)| s.1 > 0.0).map(|(i, _)| i).collect();
    let (first, last) = match (busy.first(), busy.last()) {
        (Some(a), Some(b)) => (a.saturating_sub(1), (*b + 1).min(slots.len().saturating_sub(1))),
        _ => (16.min(slots.len()), 37.min(slots.len().saturating_sub(1))),
    };
    let view = &slots[first..=last.max(first).min(slots.len().saturating_sub(1))];
    let (w, h, left, right, top, bottom) = (640.0, 250.0, 34.0, 40.0, 16.0, 50.0);
    let plot_h = h - top - bottom;
    let plot_w = w - left - right;
    let n = view.len().max(1) as f64;
    let slot = plot_w / n;
    let max_calls = nice_max(view.iter().map(|s| s.1).fold(0.0, f64::max));
    let max_staff = view.iter().map(|s| s.2.max(s.3.unwrap_or(0))).max().unwrap_or(0).max(1) as f64;
    let max_staff = max_staff.ceil() + 1.0;
    let ys = |v: f64| top + plot_h * (1.0 - v / max_staff);
    let step = |pick: &dyn Fn(&CurvePoint) -> Option<u32>| -> String {
        let mut d = String::new();
        for (i, s) in view.iter().enumerate() {
            if let Some(v) = pick(s) {
                let (x0, x1, y) = (left + slot * i as f64, left + slot * (i + 1) as f64, ys(v as f64));
                d.push_str(&format!("{}{} {} L{} {} ", if d.is_empty() { "M" } else { "L" }, f(x0), f(y), f(x1), f(y)));
            }
        }
        d
    };
    let has_a = view.iter().any(|s| s.3.is_some());
    html! {
        svg id=(id) class="chart" viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(caption) xmlns="http://www.w3.org/2000/svg" {
            title { (caption) }
            @for i in 0..=(max_staff as u32) {
                @let y = ys(i as f64);
                line x1=(f(left)) x2=(f(w - right)) y1=(f(y)) y2=(f(y)) stroke="#eee" stroke-width="1" {}
                text x=(f(left - 4.0)) y=(f(y + 4.0)) font-size="10" text-anchor="end" fill="#1b5e20" { (i) }
            }
            @for i in 0..=4 {
                @let y = top + plot_h * (1.0 - i as f64 / 4.0);
                text x=(f(w - right + 4.0)) y=(f(y + 4.0)) font-size="10" fill="#0d47a1" { (f(max_calls * i as f64 / 4.0)) }
            }
            @for (i, s) in view.iter().enumerate() {
                @let hh = plot_h * s.1 / max_calls;
                @if s.1 > 0.0 {
                    rect x=(f(left + slot * i as f64 + 1.0)) y=(f(top + plot_h - hh)) width=(f(slot - 2.0)) height=(f(hh)) fill="#90caf9" data-start=(&s.0) data-value=(format!("{:.1}", s.1)) {
                        title { (&s.0) ": " (format!("{:.1}", s.1)) " calls an hour, " (s.2) " people (Erlang C)" }
                    }
                }
                @if i % 2 == 0 {
                    text x=(f(left + slot * i as f64)) y=(f(top + plot_h + 13.0)) font-size="9" { (&s.0) }
                }
            }
            path d=(step(&|s| Some(s.2))) fill="none" stroke="#1b5e20" stroke-width="2.5" {}
            @if has_a {
                path d=(step(&|s| s.3)) fill="none" stroke="#6a1b9a" stroke-width="2" stroke-dasharray="5 3" {}
            }
            text x=(f(left)) y=(f(10.0)) font-size="10" fill="#1b5e20" { "people" }
            text x=(f(w - right + 4.0)) y=(f(10.0)) font-size="10" fill="#0d47a1" { "calls/h" }
            (legend(left, h - 8.0, &if has_a { vec!["calls an hour", "people needed (Erlang C)", "people needed (Erlang A)"] } else { vec!["calls an hour", "people needed (Erlang C)"] }, &["#90caf9", "#1b5e20", "#6a1b9a"]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        for (v, max) in [(0.0, 1.0), (7.0, 8.0), (13.0, 16.0), (45.0, 50.0), (1104.0, 1200.0), (100.0, 100.0)] {
            assert!((nice_max(v) - max).abs() < 1e-9, "{v}: {}", nice_max(v));
        }
        assert_eq!(f(2.0), "2");
        assert_eq!(f(2.04), "2");
        assert_eq!(f(2.25), "2.3");
    }

    #[test]
    fn svg_elements_are_closed() {
        // inline SVG in HTML needs explicit end tags (or `/>`): `<rect>`
        // alone would swallow the next mark
        let m = stacked_bars("x", "c", &[("a".into(), [1, 2, 0, 1])]).into_string();
        assert_eq!(m.matches("<rect").count(), m.matches("</rect>").count());
        assert!(m.contains("data-outcome=\"answered\" data-value=\"1\""));
    }
}
