//! `site`: a static page of what a repository holds, for whoever restores
//! from its public mirror — each snapshot's height, time, size, the bytes
//! it added, its signer and trust, the one-line restore command, and a plot
//! of the repository's size over time (inline SVG).
//!
//! One self-contained `index.html`: no script, no external asset, and a
//! Content-Security-Policy that forbids both, since everything it shows
//! comes from manifests a co-tenant may have written (hosts, sources and
//! tags are escaped, never markup). Written beside the repository's index
//! (FORMAT.md §15), which [`site`] publishes first, or into a directory.

use std::fmt::Write as _;

use serde::Serialize;

use crate::commands::list::{self, Listed};
use crate::error::Result;
use crate::repo::sign::Trust;
use crate::repo::Repository;

/// The page's key in the repository: served by a mirror at `<url>/index.html`.
pub const PAGE_KEY: &str = "index.html";

#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// The address readers restore from (the mirror's URL), put into the
    /// commands; empty: the repository's own location.
    pub url: String,
    pub title: String,
    /// Check each snapshot's signatures against these keys.
    pub trust: Option<std::sync::Arc<Trust>>,
    /// The page's clock (ns since the epoch).
    pub now_unix_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    pub snapshots: u64,
    pub bytes: u64,
}

/// Publishes the repository's index, then renders the page and writes it
/// into the repository as [`PAGE_KEY`]; returns the page too.
pub fn site(repo: &Repository, opts: &SiteOptions) -> Result<(String, SiteReport)> {
    repo.publish_index()?;
    let (html, report) = page(repo, opts)?;
    repo.store().put_replace(PAGE_KEY, html.as_bytes())?;
    repo.store().flush()?;
    Ok((html, report))
}

/// The page, rendered from a listing of the repository.
pub fn page(repo: &Repository, opts: &SiteOptions) -> Result<(String, SiteReport)> {
    let listed = list::list(repo, None, opts.trust.as_deref())?;
    let url = if opts.url.is_empty() {
        repo.store().location()
    } else {
        opts.url.clone()
    };
    let html = render(&listed, &url, opts);
    let report = SiteReport {
        snapshots: listed.len() as u64,
        bytes: html.len() as u64,
    };
    Ok((html, report))
}

/// Text as HTML text or attribute value.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

fn time(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| format!("{ns} ns"))
}

/// A shell word: as is when it is plain, else single-quoted.
fn shell(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn render(listed: &[Listed], url: &str, opts: &SiteOptions) -> String {
    let title = if opts.title.is_empty() {
        format!("Snapshots of {url}")
    } else {
        opts.title.clone()
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>\n\
         body{{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:76em;padding:0 1em;color:#1b1b1b}}\n\
         table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}}\n\
         td.n{{text-align:right;white-space:nowrap}}code{{font:13px ui-monospace,monospace;background:#f4f4f4;padding:.15em .3em}}code.restore{{word-break:break-all}}\n\
         .bad{{color:#a00}}.ok{{color:#060}}svg{{max-width:100%;height:auto}}\n\
         </style></head><body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    let _ = writeln!(
        h,
        "<p>Generated {} by blocksnap {}. Restore with blocksnap: \
         every chunk is checked against its hash as it is written; add <code>--trust KEY</code> to believe only \
         snapshots a key you trust signed.</p>",
        esc(&time(opts.now_unix_ns)),
        esc(env!("CARGO_PKG_VERSION"))
    );
    h.push_str(&plot(listed));
    let _ = write!(
        h,
        "<h2>{} snapshots</h2>\n<table id=\"snapshots\">\n<thead><tr><th>height</th><th>taken</th>\
         <th>node</th><th>files</th><th>size</th><th>added</th><th>signed</th><th>restore</th></tr></thead>\n<tbody>\n",
        listed.len()
    );
    for s in listed.iter().rev() {
        let short = &s.id[..s.id.len().min(12)];
        let command = format!(
            "blocksnap restore --repo {} {} --ip YOUR.NODE.IP --target /app/prep/data/loopchain",
            shell(url),
            short
        );
        let signed = match (s.trusted, s.signed_by.is_empty()) {
            (Some(true), _) => "<span class=\"ok\">trusted</span>".to_string(),
            (Some(false), false) => {
                "<span class=\"bad\">signed, not by a trusted key</span>".into()
            }
            (Some(false), true) | (None, true) => "unsigned".into(),
            (None, false) => format!(
                "by {}",
                esc(&s
                    .signed_by
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "))
            ),
        };
        let (node, files, size, added) = match &s.info {
            Some(i) => (
                esc(&i.host),
                i.files.to_string(),
                bytes(i.logical_bytes),
                bytes(i.new_stored_bytes),
            ),
            None => (
                format!(
                    "<span class=\"bad\">unreadable: {}</span>",
                    esc(s.error.as_deref().unwrap_or(""))
                ),
                String::new(),
                String::new(),
                String::new(),
            ),
        };
        let _ = writeln!(
            h,
            "<tr data-id=\"{id}\"><td class=\"n\">{height}</td><td>{time}</td><td>{node}</td>\
             <td class=\"n\">{files}</td><td class=\"n\">{size}</td><td class=\"n\">{added}</td>\
             <td>{signed}</td><td><code class=\"restore\">{cmd}</code></td></tr>",
            id = esc(&s.id),
            height = s.height,
            time = esc(&time(s.created_unix_ns)),
            cmd = esc(&command),
        );
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}

/// The repository's stored size over time: the running sum of the bytes
/// each snapshot added, oldest first, as an inline SVG.
fn plot(listed: &[Listed]) -> String {
    let mut points: Vec<(u64, u64)> = Vec::new();
    let mut total = 0u64;
    for s in listed {
        total += s.info.as_ref().map_or(0, |i| i.new_stored_bytes);
        points.push((s.created_unix_ns, total));
    }
    let (w, hgt, pad) = (720.0, 220.0, 40.0);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "<p>No snapshots yet.</p>\n".into();
    };
    let span = (last.0 - first.0).max(1) as f64;
    let top = total.max(1) as f64;
    let xy: Vec<String> = points
        .iter()
        .map(|(t, b)| {
            let x = pad + (w - 2.0 * pad) * ((t - first.0) as f64 / span);
            let y = hgt - pad - (hgt - 2.0 * pad) * (*b as f64 / top);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<h2>Repository size</h2>\n<svg id=\"size-plot\" viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" height=\"{hgt}\" role=\"img\" \
         aria-label=\"stored bytes over time\">\n\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#999\"/>\n\
         <polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{pts}\"/>\n\
         <text x=\"{pad}\" y=\"{ty}\" font-size=\"12\">{top}</text>\
         <text x=\"{pad}\" y=\"{by}\" font-size=\"12\">{t0}</text>\
         <text x=\"{r}\" y=\"{by}\" font-size=\"12\" text-anchor=\"end\">{t1}</text>\n</svg>\n",
        b = hgt - pad,
        r = w - pad,
        pts = xy.join(" "),
        ty = pad - 8.0,
        by = hgt - pad + 18.0,
        top = esc(&bytes(total)),
        t0 = esc(&time(first.0)),
        t1 = esc(&time(last.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_never_becomes_markup_and_commands_are_shell_words() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(
            shell("https://cdn.example/icon"),
            "https://cdn.example/icon"
        );
        assert_eq!(shell("/a b/x'y"), r"'/a b/x'\''y'");
    }
}
