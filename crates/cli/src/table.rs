//! A small table printed as aligned text, Markdown or CSV (`runs` and
//! `sweep` tables).

use std::path::Path;

use anyhow::{Context, Result};

/// Rows of cells under a header; the first column is a name, the others
/// values (right-aligned in text).
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// One cell per column in each row.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns padded to their widest cell, two spaces apart.
    pub fn to_text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, &w))| {
                    if c == 0 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    /// A GitHub-flavoured Markdown table.
    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| {
            let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", escaped.join(" | "))
        };
        let mut out = line(&self.header);
        let rule: Vec<String> = (0..self.header.len())
            .map(|c| if c == 0 { ":--" } else { "--:" }.to_string())
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    /// The table as CSV text.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&self.header)?;
        for row in &self.rows {
            writer.write_record(row)?;
        }
        writer.into_inner().context("writing CSV")
    }
}

/// Writes `bytes` to `path`, naming it in an error.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A metric with 4 decimals.
pub fn metric(v: f64) -> String {
    format!("{v:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_markdown_and_csv() {
        let table = Table {
            header: vec!["run".into(), "lr".into()],
            rows: vec![
                vec!["a".into(), "0.001".into()],
                vec!["long|name".into(), "0.1".into()],
            ],
        };
        assert_eq!(
            table.to_text(),
            "run           lr\na          0.001\nlong|name    0.1\n"
        );
        assert!(table.to_markdown().contains("| long\\|name | 0.1 |"));
        assert_eq!(
            String::from_utf8(table.to_csv().unwrap()).unwrap(),
            "run,lr\na,0.001\nlong|name,0.1\n"
        );
    }
}
