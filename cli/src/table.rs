//! A plain aligned-column table for human output: a header row, then one
//! row per item, columns padded to their widest cell and two spaces apart.
//!
//! Widths count `char`s, which is right for the ASCII the server's fields
//! mostly hold; a name in a wide script may misalign its row, never lose
//! text. No borders, so the output stays easy to `grep` and `awk`.

pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

const COLUMN_GAP: &str = "  ";

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    /// Adds a row; it must have one cell per header column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "a table row has one cell per column");
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|title| title.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = self.header.iter().map(|title| title.to_string());
        for cells in std::iter::once(header.collect::<Vec<_>>()).chain(self.rows.iter().cloned()) {
            let mut line = String::new();
            for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                if index > 0 {
                    line.push_str(COLUMN_GAP);
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            // The last column is padded too; trailing blanks help nobody.
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_lines_have_no_trailing_blanks() {
        let mut table = Table::new(&["ID", "NAME", "SCOPES"]);
        table.row(vec!["1".into(), "ci-deploy".into(), "tokens:read".into()]);
        table.row(vec!["12".into(), "x".into(), String::new()]);
        assert_eq!(
            table.render(),
            "ID  NAME       SCOPES\n\
             1   ci-deploy  tokens:read\n\
             12  x\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["ID", "NAME"]).render(), "ID  NAME\n");
    }
}
