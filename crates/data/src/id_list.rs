//! A list of raw ids in a text file, one a line (`sasrec recommend
//! --users-file`), read with the bounds of the log readers: a line holds at
//! most [`MAX_ID_BYTES`] bytes of id, and no NUL byte.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::ids::{cut_bytes, id_problem};
use crate::{DataError, MAX_ID_BYTES, Place};

/// The ids listed in `path` with their 1-based line numbers: one id a line,
/// surrounding spaces and blank lines ignored. A line longer than an id may
/// be (plus a little room for spaces and `\r\n`) is refused before it is
/// read whole, naming the line.
pub fn read_id_list(path: &Path) -> Result<Vec<(u64, String)>, DataError> {
    const ROOM: usize = 64;
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut ids = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let limit = (MAX_ID_BYTES + ROOM) as u64;
        let read = (&mut reader)
            .take(limit + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| DataError::io(path, e))?;
        if read == 0 {
            break;
        }
        let bad = |value: &[u8], problem: &str| DataError::BadField {
            path: path.to_path_buf(),
            place: Place::Line(number),
            field: "id".to_string(),
            value: cut_bytes(value, 80),
            problem: problem.to_string(),
        };
        if read as u64 > limit {
            let problem = format!("a line longer than an id may be ({MAX_ID_BYTES} bytes)");
            return Err(bad(&line, &problem));
        }
        let id = line.trim_ascii();
        if id.is_empty() {
            continue;
        }
        if let Some(problem) = id_problem(id) {
            return Err(bad(id, problem));
        }
        let id = std::str::from_utf8(id).map_err(|_| bad(id, "an id that is not valid UTF-8"))?;
        ids.push((number, id.to_string()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_a_line_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        std::fs::write(&path, " 5 \r\n\nU-7\n").unwrap();
        assert_eq!(
            read_id_list(&path).unwrap(),
            [(1, "5".to_string()), (3, "U-7".to_string())]
        );
        let long = format!("1\n{}\n", "x".repeat(10 * MAX_ID_BYTES));
        std::fs::write(&path, long).unwrap();
        let err = read_id_list(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("1024 bytes"),
            "{err}"
        );
        std::fs::write(&path, "1\n2\0\n").unwrap();
        let err = read_id_list(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("NUL"), "{err}");
    }
}
