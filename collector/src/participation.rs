//! NHS England's participation list: the practices that agreed to provide
//! data (via CQRS), given to suppliers monthly as a CSV file. Only these
//! practices go into that month's submission.

use crate::db::DbError;
use anyhow::{bail, Result};
use cbt_proto::upload::is_ods;
use chrono::NaiveDate;
use deadpool_postgres::Pool;

/// A month given as YYYY-MM: its first day.
pub fn parse_month(s: &str) -> Result<NaiveDate> {
    let bad = || anyhow::anyhow!("--month {s:?}: write the month as YYYY-MM, like 2026-11");
    let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)
}

/// RFC 4180 records with the line each starts on (quotes, doubled quotes,
/// CRLF or LF line ends, line breaks inside quotes).
pub fn csv_records(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                any = true;
            }
            ',' => {
                rec.push(std::mem::take(&mut field));
                any = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                rec.push(std::mem::take(&mut field));
                if any || rec.len() > 1 || !rec[0].is_empty() {
                    out.push((start, std::mem::take(&mut rec)));
                } else {
                    rec.clear();
                }
                any = false;
                line += 1;
                start = line;
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if any || !field.is_empty() {
        rec.push(field);
        out.push((start, rec));
    }
    out
}

/// What a participation file holds.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedList {
    pub practices: Vec<String>,
    /// (line, value) of codes that are not ODS practice codes.
    pub invalid: Vec<(usize, String)>,
    pub duplicates: usize,
}

/// Reads the `PRACTICE_CODE` column (header matched without regard to case;
/// a UTF-8 byte order mark is skipped; other columns are ignored).
pub fn parse_list(bytes: &[u8]) -> Result<ParsedList> {
    let text = std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("the file is not UTF-8 text ({e}); save it as CSV (UTF-8)"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = csv_records(text).into_iter();
    let Some((_, header)) = records.next() else {
        bail!("the file is empty: it needs a header line with a PRACTICE_CODE column");
    };
    let Some(col) = header.iter().position(|h| h.trim().eq_ignore_ascii_case("PRACTICE_CODE")) else {
        bail!(
            "no PRACTICE_CODE column in the header line (columns: {}); use NHS England's participation file as given",
            header.iter().map(|h| h.trim()).collect::<Vec<_>>().join(", ")
        );
    };
    let mut out = ParsedList::default();
    let mut seen = std::collections::BTreeSet::new();
    for (line, rec) in records {
        let v = rec.get(col).map(|s| s.trim()).unwrap_or("");
        let code = v.to_ascii_uppercase();
        if !is_ods(&code) {
            out.invalid.push((line, v.chars().take(40).collect()));
            continue;
        }
        if seen.insert(code.clone()) {
            out.practices.push(code);
        } else {
            out.duplicates += 1;
        }
    }
    Ok(out)
}

/// Replaces the month's list with `practices`, in one transaction.
pub async fn replace(pool: &Pool, month: NaiveDate, practices: &[String], source: &str) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM participation WHERE month = $1", &[&month]).await?;
    tx.execute("INSERT INTO participation (month, practice) SELECT $1, unnest($2::text[])", &[&month, &practices])
        .await?;
    let n = practices.len() as i32;
    tx.execute(
        "INSERT INTO participation_imports (month, source, practices) VALUES ($1, $2, $3)
         ON CONFLICT (month) DO UPDATE SET imported_at = now(), source = excluded.source, practices = excluded.practices",
        &[&month, &source, &n],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The month's list, or `None` if none was imported.
pub async fn list(pool: &Pool, month: NaiveDate) -> Result<Option<Vec<String>>, DbError> {
    let client = pool.get().await?;
    if client.query_opt("SELECT 1 FROM participation_imports WHERE month = $1", &[&month]).await?.is_none() {
        return Ok(None);
    }
    let rows = client.query("SELECT practice FROM participation WHERE month = $1 ORDER BY practice", &[&month]).await?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        assert_eq!(parse_month("2026-11").unwrap(), NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        assert!(parse_month("2026-13").is_err());
        assert!(parse_month("11/2026").is_err());
        assert!(parse_month("2026-1").is_err());
    }

    #[test]
    fn csv_with_quotes_and_crlf() {
        let r = csv_records("a,\"b,\"\"c\"\"\"\r\n\r\n1,\"x\ny\"\n2,3");
        assert_eq!(
            r,
            vec![
                (1, vec!["a".to_string(), "b,\"c\"".to_string()]),
                (3, vec!["1".to_string(), "x\ny".to_string()]),
                (5, vec!["2".to_string(), "3".to_string()]),
            ]
        );
    }

    #[test]
    fn the_practice_code_column_is_found_whatever_its_case() {
        let l = parse_list("\u{feff}Org_Name,practice_code,ICB\r\n\"Surgery, The\",B82005,QWO\r\nOther,b82099,QWO\r\nBad,X1,QWO\r\nDup,B82005,QWO\r\nEmpty,,\r\n".as_bytes()).unwrap();
        assert_eq!(l.practices, vec!["B82005", "B82099"]);
        assert_eq!(l.invalid, vec![(4, "X1".to_string()), (6, "".to_string())]);
        assert_eq!(l.duplicates, 1);
        let e = parse_list(b"ODS,NAME\nB82005,x\n").unwrap_err().to_string();
        assert!(e.contains("no PRACTICE_CODE column") && e.contains("ODS, NAME"), "{e}");
        assert!(parse_list(b"").is_err());
    }
}
