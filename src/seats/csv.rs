//! The bulk import's CSV format, parsed without any I/O.
//!
//! The header is exactly `extension,number,name,profile` (any case, spaces
//! around names ignored), followed by zero or more add-on columns, each named
//! by an add-on code of the license. A row sets the user of that extension:
//! its number (may be empty), display name, profile (empty: keep it, or the
//! default for a new user) and, for each add-on column, whether it holds the
//! add-on (`1`, `yes`, `y`, `x`, `true` or `0`, `no`, `n`, `false`, empty).
//! Add-ons without a column are left alone.
//!
//! RFC 4180 quoting (`"Smith, Ann"`, `""` for a quote) and CRLF or LF line
//! ends are accepted; so are a UTF-8 byte order mark and `;` as separator
//! when the header has `;` and no `,` (spreadsheets in some locales write
//! that). Blank lines are skipped. The file must be UTF-8 and at most
//! [`MAX_BYTES`] long with at most [`MAX_ROWS`] rows.
//!
//! This module checks what a row says on its own (field count, syntax,
//! duplicate extensions); the ledger checks it against the users and the
//! license.

use std::collections::HashMap;

use super::plan::RowError;
use super::{check_extension, check_name, check_number};

/// Largest file accepted: ten times what 10,000 users take.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most rows accepted (after the header).
pub const MAX_ROWS: usize = 50_000;
/// The columns every file starts with, in this order.
pub const FIXED_COLUMNS: [&str; 4] = ["extension", "number", "name", "profile"];

const YES: [&str; 5] = ["1", "yes", "y", "x", "true"];
const NO: [&str; 5] = ["", "0", "no", "n", "false"];

/// A parsed file: its add-on columns and the rows that parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvTable {
    pub addon_columns: Vec<String>,
    pub rows: Vec<CsvRow>,
    /// Rows that did not parse, with their line and reason.
    pub errors: Vec<RowError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvRow {
    /// 1-based line where the row starts.
    pub line: usize,
    pub extension: String,
    pub number: Option<String>,
    pub name: String,
    pub profile: Option<String>,
    /// Parallel to `CsvTable::addon_columns`.
    pub addons: Vec<bool>,
}

/// Problems with the file as a whole; no row is looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("the file is {size} bytes, more than the {max} an import accepts; split it")]
    TooLarge { size: usize, max: usize },
    #[error("the file is not UTF-8 text (line {line}, byte {byte}); save it as \"CSV UTF-8\"")]
    NotUtf8 { line: usize, byte: usize },
    #[error(
        "the file is empty; it needs the header extension,number,name,profile and one row per user"
    )]
    Empty,
    #[error("the header must start with extension,number,name,profile; {reason}")]
    BadHeader { reason: String },
    #[error("the file has more than {max} rows; split it")]
    TooManyRows { max: usize },
    #[error("a quoted field opened on line {line} is never closed")]
    UnclosedQuote { line: usize },
}

/// Parses an import file. File-level problems are an error; bad rows are
/// collected in [`CsvTable::errors`] so that all of them can be reported.
pub fn parse(bytes: &[u8]) -> Result<CsvTable, CsvError> {
    if bytes.len() > MAX_BYTES {
        return Err(CsvError::TooLarge {
            size: bytes.len(),
            max: MAX_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        CsvError::NotUtf8 {
            line: 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count(),
            byte: at,
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first_line = text.lines().next().unwrap_or("");
    let sep = if first_line.contains(';') && !first_line.contains(',') {
        ';'
    } else {
        ','
    };
    let mut records = records(text, sep)?
        .into_iter()
        .filter(|r| !(r.fields.len() == 1 && r.fields[0].trim().is_empty()));
    let header = records.next().ok_or(CsvError::Empty)?;
    let addon_columns = parse_header(&header)?;
    let width = FIXED_COLUMNS.len() + addon_columns.len();

    let mut table = CsvTable {
        addon_columns,
        rows: Vec::new(),
        errors: Vec::new(),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, rec) in records.enumerate() {
        if n >= MAX_ROWS {
            return Err(CsvError::TooManyRows { max: MAX_ROWS });
        }
        match parse_row(&rec, width, &table.addon_columns) {
            Err(reason) => table.errors.push(RowError {
                line: rec.line,
                reason,
            }),
            Ok(row) => {
                if let Some(first) = seen.get(&row.extension) {
                    table.errors.push(RowError {
                        line: rec.line,
                        reason: format!("extension {} is on line {first} already", row.extension),
                    });
                    continue;
                }
                seen.insert(row.extension.clone(), rec.line);
                table.rows.push(row);
            }
        }
    }
    Ok(table)
}

/// One record: its fields, the line it starts on, and a syntax problem.
struct Record {
    line: usize,
    fields: Vec<String>,
    problem: Option<String>,
}

/// Splits the text into records (RFC 4180). A quote inside an unquoted
/// field, or text after a closing quote, spoils only that record.
fn records(text: &str, sep: char) -> Result<Vec<Record>, CsvError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut rec = Record {
        line,
        fields: Vec::new(),
        problem: None,
    };
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    // Whether the current field started with a quote, and whether we are
    // inside the quotes now.
    let (mut quoted, mut in_quotes) = (false, false);
    let mut quote_line = line;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() && !quoted => {
                field.clear();
                quoted = true;
                in_quotes = true;
                quote_line = line;
            }
            '"' => {
                rec.problem
                    .get_or_insert_with(|| "a quote in the middle of a field; quote the whole field and double the quote".to_string());
                field.push(c);
            }
            c if c == sep => {
                rec.fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                rec.fields.push(std::mem::take(&mut field));
                quoted = false;
                line += 1;
                out.push(std::mem::replace(
                    &mut rec,
                    Record {
                        line,
                        fields: Vec::new(),
                        problem: None,
                    },
                ));
            }
            c if quoted && !c.is_whitespace() => {
                rec.problem
                    .get_or_insert_with(|| "text after the closing quote of a field".to_string());
                field.push(c);
            }
            c => field.push(c),
        }
    }
    if in_quotes {
        return Err(CsvError::UnclosedQuote { line: quote_line });
    }
    if !field.is_empty() || !rec.fields.is_empty() {
        rec.fields.push(field);
        out.push(rec);
    }
    Ok(out)
}

fn parse_header(rec: &Record) -> Result<Vec<String>, CsvError> {
    let bad = |reason: String| CsvError::BadHeader { reason };
    if let Some(p) = &rec.problem {
        return Err(bad(format!("line {}: {p}", rec.line)));
    }
    let names: Vec<String> = rec.fields.iter().map(|f| f.trim().to_string()).collect();
    let fixed_ok = names.len() >= FIXED_COLUMNS.len()
        && names
            .iter()
            .zip(FIXED_COLUMNS)
            .all(|(n, f)| n.eq_ignore_ascii_case(f));
    if !fixed_ok {
        return Err(bad(format!("found {:?}", names.join(","))));
    }
    let mut addons: Vec<String> = Vec::new();
    for name in &names[FIXED_COLUMNS.len()..] {
        if name.is_empty() {
            return Err(bad("an add-on column has no name".to_string()));
        }
        if addons.contains(name) || FIXED_COLUMNS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            return Err(bad(format!("the column {name:?} appears twice")));
        }
        addons.push(name.clone());
    }
    Ok(addons)
}

fn parse_row(rec: &Record, width: usize, addon_columns: &[String]) -> Result<CsvRow, String> {
    if let Some(p) = &rec.problem {
        return Err(p.clone());
    }
    if rec.fields.len() != width {
        return Err(format!(
            "expected {width} fields like the header, found {}",
            rec.fields.len()
        ));
    }
    let f: Vec<&str> = rec.fields.iter().map(|f| f.trim()).collect();
    let extension = f[0];
    if extension.is_empty() {
        return Err("the extension is empty".to_string());
    }
    check_extension(extension).map_err(|e| e.to_string())?;
    let number = match f[1] {
        "" => None,
        n => {
            check_number(n).map_err(|e| e.to_string())?;
            Some(n.to_string())
        }
    };
    if f[2].is_empty() {
        return Err("the name is empty".to_string());
    }
    check_name(f[2]).map_err(|e| e.to_string())?;
    let profile = match f[3] {
        "" => None,
        p => Some(p.to_string()),
    };
    let mut addons = Vec::with_capacity(addon_columns.len());
    for (column, cell) in addon_columns.iter().zip(&f[FIXED_COLUMNS.len()..]) {
        let v = cell.to_ascii_lowercase();
        if YES.contains(&v.as_str()) {
            addons.push(true);
        } else if NO.contains(&v.as_str()) {
            addons.push(false);
        } else {
            return Err(format!(
                "column {column}: {cell:?} is neither yes (1, yes, x) nor no (0, no, empty)"
            ));
        }
    }
    Ok(CsvRow {
        line: rec.line,
        extension: extension.to_string(),
        number,
        name: f[2].to_string(),
        profile,
        addons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(errors: &[RowError]) -> Vec<usize> {
        errors.iter().map(|e| e.line).collect()
    }

    #[test]
    fn parses_the_fixed_columns_and_addon_columns() {
        let t = parse(
            b"extension,number,name,profile,mobile,team_chat\n\
              204,+41 44 000 02 04,Ann Smith,premium,1,no\n\
              205,,Bob,,x,\n",
        )
        .unwrap();
        assert_eq!(t.addon_columns, ["mobile", "team_chat"]);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(
            t.rows,
            vec![
                CsvRow {
                    line: 2,
                    extension: "204".into(),
                    number: Some("+41 44 000 02 04".into()),
                    name: "Ann Smith".into(),
                    profile: Some("premium".into()),
                    addons: vec![true, false],
                },
                CsvRow {
                    line: 3,
                    extension: "205".into(),
                    number: None,
                    name: "Bob".into(),
                    profile: None,
                    addons: vec![true, false],
                },
            ]
        );
    }

    #[test]
    fn quoting_crlf_bom_and_semicolons() {
        let t = parse(
            "\u{feff}Extension;Number;Name;Profile\r\n\
             204;;\"Smith; Ann \"\"the boss\"\"\";basic\r\n\
             \r\n\
             205;;\"Two\nlines\";basic\r\n\
             206;;Carl;basic"
                .as_bytes(),
        )
        .unwrap();
        // A quoted newline is part of the field (here refused by the name
        // rule), and the rows after it keep their true line numbers.
        assert_eq!(lines(&t.errors), [4]);
        assert!(t.errors[0].reason.contains("control"), "{:?}", t.errors);
        let names: Vec<(usize, &str)> = t.rows.iter().map(|r| (r.line, r.name.as_str())).collect();
        assert_eq!(names, [(2, "Smith; Ann \"the boss\""), (6, "Carl")]);
    }

    #[test]
    fn control_characters_in_a_name_are_refused() {
        // Names reach the PBX's screens: control characters are refused.
        let t = parse(b"extension,number,name,profile\n204,,\"a\tb\",basic\n").unwrap();
        assert_eq!(lines(&t.errors), [2]);
        assert!(t.errors[0].reason.contains("name"), "{:?}", t.errors);
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let t = parse(
            b"extension,number,name,profile,mobile\n\
              204,,Ann,basic,1\n\
              205,,Bob,basic\n\
              ,,Nobody,basic,0\n\
              2 07,,Spacey,basic,0\n\
              208,abc,Carl,basic,0\n\
              209,,,basic,0\n\
              210,,Dora,basic,maybe\n\
              204,,Ann again,basic,0\n\
              21\"1,,Quote,basic,0\n\
              \"212\"x,,After,basic,0\n\
              213,,Eve,basic,yes\n",
        )
        .unwrap();
        assert_eq!(lines(&t.errors), [3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let reasons: Vec<&str> = t.errors.iter().map(|e| e.reason.as_str()).collect();
        assert!(reasons[0].contains("expected 5 fields"), "{}", reasons[0]);
        assert!(reasons[1].contains("extension is empty"));
        assert!(reasons[2].contains("extension"));
        assert!(reasons[3].contains("number"));
        assert!(reasons[4].contains("name is empty"));
        assert!(reasons[5].contains("column mobile"));
        assert!(reasons[6].contains("on line 2 already"));
        assert!(reasons[7].contains("quote in the middle"));
        assert!(reasons[8].contains("after the closing quote"));
        let good: Vec<&str> = t.rows.iter().map(|r| r.extension.as_str()).collect();
        assert_eq!(good, ["204", "213"]);
    }

    #[test]
    fn wrong_headers_are_refused() {
        for bad in [
            &b"ext,number,name,profile\n"[..],
            b"extension,name,number,profile\n",
            b"extension,number,name\n",
            b"extension,number,name,profile,mobile,mobile\n",
            b"extension,number,name,profile,,\n",
            b"extension,number,name,profile,Name\n",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, CsvError::BadHeader { .. }), "{err:?}");
        }
        assert_eq!(parse(b"").unwrap_err(), CsvError::Empty);
        assert_eq!(parse(b"\n\n").unwrap_err(), CsvError::Empty);
    }

    #[test]
    fn non_utf8_names_the_line() {
        let err = parse(b"extension,number,name,profile\n204,,M\xfcller,basic\n").unwrap_err();
        assert_eq!(err, CsvError::NotUtf8 { line: 2, byte: 36 });
        assert!(err.to_string().contains("CSV UTF-8"));
    }

    #[test]
    fn huge_files_and_too_many_rows_are_refused() {
        let big = vec![b'a'; MAX_BYTES + 1];
        assert_eq!(
            parse(&big).unwrap_err(),
            CsvError::TooLarge {
                size: MAX_BYTES + 1,
                max: MAX_BYTES
            }
        );
        let mut many = String::from("extension,number,name,profile\n");
        for i in 0..=MAX_ROWS {
            many.push_str(&format!("{i},,U,basic\n"));
        }
        assert!(many.len() <= MAX_BYTES);
        assert_eq!(
            parse(many.as_bytes()).unwrap_err(),
            CsvError::TooManyRows { max: MAX_ROWS }
        );
    }

    #[test]
    fn an_unclosed_quote_is_a_file_error() {
        let err =
            parse(b"extension,number,name,profile\n204,,\"Ann,basic\n205,,B,basic\n").unwrap_err();
        assert_eq!(err, CsvError::UnclosedQuote { line: 2 });
    }
}
