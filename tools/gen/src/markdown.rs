//! The little Markdown of the project's docs, as roff for man pages:
//! headings, paragraphs, lists, tables, code blocks, `code` and [links].

/// Escapes text for roff: backslashes, and a leading `.` or `'` (which roff
/// would read as a request).
pub fn escape(text: &str) -> String {
    let t = escape_inner(text);
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// Inline Markdown: `code` in bold, [text](link) as its text, **bold**.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                out.push_str("\\fB");
                out.push_str(&escape_inner(&after[..end]));
                out.push_str("\\fR");
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after.find("**") {
                out.push_str("\\fB");
                out.push_str(&escape_inner(&after[..end]));
                out.push_str("\\fR");
                rest = &after[end + 2..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('[') {
            if let Some(close) = after.find("](") {
                if let Some(end) = after[close..].find(')') {
                    out.push_str(&escape_inner(&after[..close]));
                    rest = &after[close + end + 1..];
                    continue;
                }
            }
        }
        let next = rest[1..]
            .find(['`', '[', '*'])
            .map_or(rest.len(), |i| i + 1);
        out.push_str(&escape_inner(&rest[..next]));
        rest = &rest[next..];
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Backslashes and dashes escaped, anything outside ASCII as a roff
/// Unicode escape (`\[u2026]`), which every troff reads.
fn escape_inner(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", c as u32)),
        }
    }
    out
}

fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|').trim_end_matches('|');
    // `\|` inside a cell is a literal bar.
    row.replace("\\|", "\u{0}")
        .split('|')
        .map(|c| c.trim().replace('\u{0}', "|"))
        .collect()
}

/// A whole document (its `# title` left out) as roff.
pub fn to_roff(md: &str) -> String {
    let mut out = String::new();
    let mut para: Vec<&str> = Vec::new();
    let mut lines = md.lines().peekable();
    let flush = |para: &mut Vec<&str>, out: &mut String| {
        if !para.is_empty() {
            out.push_str(".PP\n");
            out.push_str(&inline(&para.join(" ")));
            out.push('\n');
            para.clear();
        }
    };
    while let Some(line) = lines.next() {
        if line.starts_with("# ") {
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            flush(&mut para, &mut out);
            out.push_str(&format!(".SH {}\n", inline(&h.to_uppercase())));
        } else if let Some(h) = line.strip_prefix("### ") {
            flush(&mut para, &mut out);
            out.push_str(&format!(".SS {}\n", inline(h)));
        } else if line.starts_with("```") {
            flush(&mut para, &mut out);
            out.push_str(".PP\n.nf\n");
            for code in lines.by_ref() {
                if code.starts_with("```") {
                    break;
                }
                out.push_str(&escape(code));
                out.push('\n');
            }
            out.push_str(".fi\n");
        } else if line.starts_with("    ") && para.is_empty() {
            out.push_str(".PP\n.nf\n");
            out.push_str(&escape(&line[4..]));
            out.push('\n');
            while let Some(next) = lines.peek() {
                if let Some(code) = next.strip_prefix("    ") {
                    out.push_str(&escape(code));
                    out.push('\n');
                    lines.next();
                } else {
                    break;
                }
            }
            out.push_str(".fi\n");
        } else if line.trim_start().starts_with('|') {
            flush(&mut para, &mut out);
            // Header, separator, then one .TP per row: first cell as the
            // tag, the others after it.
            let header = cells(line);
            lines.next();
            while let Some(row) = lines.peek() {
                if !row.trim_start().starts_with('|') {
                    break;
                }
                let c = cells(row);
                lines.next();
                out.push_str(".TP\n");
                out.push_str(&inline(c.first().map_or("", String::as_str)));
                out.push('\n');
                let rest: Vec<String> = c
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, v)| !v.is_empty() && v.as_str() != "—")
                    .map(|(i, v)| match header.get(i).map(String::as_str) {
                        Some("default") => format!("Default: {v}."),
                        _ => v.clone(),
                    })
                    .collect();
                out.push_str(&inline(&rest.join(" ")));
                out.push('\n');
            }
        } else if let Some(item) = line.strip_prefix("- ") {
            flush(&mut para, &mut out);
            let mut text = item.to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with("  ") && !next.trim().is_empty() {
                    text.push(' ');
                    text.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&inline(&text));
            out.push('\n');
        } else if line.trim().is_empty() {
            flush(&mut para, &mut out);
        } else {
            para.push(line.trim());
        }
    }
    flush(&mut para, &mut out);
    out
}

/// One `## heading` section of a document as a `.SH name` section.
pub fn section_to_roff(md: &str, heading: &str, name: &str) -> String {
    let mut body = String::new();
    let mut inside = false;
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            inside = h.trim() == heading;
            continue;
        }
        if inside {
            body.push_str(line);
            body.push('\n');
        }
    }
    if body.is_empty() {
        return String::new();
    }
    format!(".SH {name}\n{}", to_roff(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_tables_code_and_inline() {
        let md = "# Title\n\nSome `key` and [a link](x.md).\n\n## Keys\n\n| key | default | meaning |\n|---|---|---|\n| `a.b` | `1` | what it is |\n\n    licagent run\n\n- one\n  more\n";
        let r = to_roff(md);
        assert!(r.contains(".PP\nSome \\fBkey\\fR and a link.\n"), "{r}");
        assert!(r.contains(".SH KEYS\n"), "{r}");
        assert!(
            r.contains(".TP\n\\fBa.b\\fR\nDefault: \\fB1\\fR. what it is\n"),
            "{r}"
        );
        assert!(r.contains(".nf\nlicagent run\n.fi\n"), "{r}");
        assert!(r.contains(".IP \\(bu 2\none more\n"), "{r}");
        assert!(!r.contains("Title"));
    }

    #[test]
    fn roff_requests_in_text_are_escaped() {
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("a\\b-c"), "a\\eb\\-c");
        assert_eq!(inline("'quoted"), "\\&'quoted");
        assert_eq!(escape("a \u{2026} b"), "a \\[u2026] b");
    }

    #[test]
    fn one_section_only() {
        let md = "## A\n\ntext a\n\n## B\n\ntext b\n";
        let r = section_to_roff(md, "B", "BEE");
        assert_eq!(r, ".SH BEE\n.PP\ntext b\n");
    }
}
