//! The text reader's parallel path. After the first chunk (header, columns,
//! time format, all read sequentially), the rest of the file is read in
//! blocks of whole lines, and a batch of blocks is parsed on rayon's threads
//! while this thread reads the next batch. A block's worker looks its ids up
//! in the file's tables as they were when the batch began and interns the
//! new ones into tables of its own; the blocks are then merged in file
//! order, each block's new ids taken into the file's tables in the block's
//! order of first appearance. Every id gets the code a sequential read gives
//! it, so the result is the sequential one by construction, whatever the
//! number of threads.
//!
//! A block with anything unusual (an error, a quote character, a blank
//! line, a change of time format, a very long line) is dropped with every
//! block after it, and reading goes on sequentially from its first byte:
//! errors and edge cases are the sequential path's own, with its line
//! numbers.

use std::io::{Cursor, Read};

use rayon::prelude::*;

use super::fields::LastId;
use super::text_parser::{MAX_LINE, Plan, Progress, TextParser};
use crate::{DataError, IdTable, Interactions};

/// What the parallel path did (tests check that it ran, and where it
/// handed over to the sequential path).
#[derive(Debug, Default)]
pub(super) struct BlockReport {
    /// Blocks parsed in parallel and merged.
    pub(super) merged: usize,
    /// The line from which the sequential path read the rest, when a block
    /// was dropped.
    pub(super) sequential_from: Option<u64>,
}

/// One block parsed on its own: codes below the tables' lengths when the
/// batch began are the file's, the others index the block's new ids.
struct ParsedBlock {
    out: Interactions,
    lines: u64,
}

impl<'p> TextParser<'p> {
    /// Whether the first chunk fixed what blocks need: the columns and the
    /// time format, with no blank line pending.
    pub(super) fn ready_for_blocks(&self) -> bool {
        self.cols.is_some() && self.time.format().is_some() && self.blank_since.is_none()
    }

    /// Parses `pending` (the start of a line), then the rest of `reader`,
    /// in batches of blocks parsed in parallel and merged in order.
    pub(super) fn blocks<R: Read>(
        &mut self,
        pending: Vec<u8>,
        reader: &mut R,
        plan: Plan,
        report: &mut BlockReport,
    ) -> Result<(), DataError> {
        let read = |blocks: &mut Vec<Vec<u8>>, carry: &mut Vec<u8>, reader: &mut R| {
            read_batch(reader, blocks, carry, plan.batch, plan.block)
        };
        let (mut current, mut next) = (Vec::new(), Vec::new());
        let mut carry = pending;
        let mut at_end =
            read(&mut next, &mut carry, reader).map_err(|e| DataError::io(self.path, e))?;
        loop {
            std::mem::swap(&mut current, &mut next);
            let last = at_end;
            // The tables stay as they are while the workers look ids up.
            let known = (self.out.users.len() as u32, self.out.items.len() as u32);
            // Parse this batch on the pool while this thread reads the next.
            let mut parsed: Vec<Option<ParsedBlock>> = Vec::new();
            let this = &*self;
            let read_next = rayon::in_place_scope(|scope| {
                scope.spawn(|_| parsed = current.par_iter().map(|b| this.parse_block(b)).collect());
                if last {
                    next.clear();
                    Ok(true)
                } else {
                    read(&mut next, &mut carry, reader)
                }
            });
            for (i, block) in parsed.into_iter().enumerate() {
                let Some(block) = block else {
                    report.sequential_from = Some(self.line_no + 1);
                    let mut rest = current[i..].concat();
                    // Through the sequential path's buffer, so that long lines
                    // are refused as they are there. A failed read ends the
                    // input, after what came before it.
                    if read_next.is_ok() {
                        rest.extend(next.concat());
                        rest.append(&mut carry);
                        let mut rest = Cursor::new(rest).chain(&mut *reader);
                        self.stream(Vec::new(), &mut rest, plan.chunk, false)?;
                    } else {
                        self.stream(Vec::new(), &mut Cursor::new(rest), plan.chunk, false)?;
                    }
                    return read_next
                        .map(|_| ())
                        .map_err(|e| DataError::io(self.path, e));
                };
                self.merge(block, known);
                report.merged += 1;
            }
            at_end = read_next.map_err(|e| DataError::io(self.path, e))?;
            if last {
                // What is left is the last line, when it has no newline.
                self.stream(Vec::new(), &mut Cursor::new(carry), plan.chunk, false)?;
                return Ok(());
            }
        }
    }

    /// `text` (whole lines) parsed by a parser configured like this one,
    /// or `None` when it holds anything the sequential path must see.
    fn parse_block(&self, text: &[u8]) -> Option<ParsedBlock> {
        // A newline in every stretch of MAX_LINE / 2 bytes: no line is over
        // MAX_LINE, which the sequential path may refuse.
        let short_lines = text.ends_with(b"\n")
            && text
                .chunks(MAX_LINE / 2)
                .all(|stretch| memchr::memchr(b'\n', stretch).is_some());
        if !short_lines {
            return None;
        }
        let mut worker = self.worker();
        // A row per line at most: no reallocation while parsing.
        worker.out.reserve(memchr::memchr_iter(b'\n', text).count());
        match worker.lines(text) {
            Ok(Progress::Parsed(used)) if used == text.len() => {}
            _ => return None,
        }
        if worker.blank_since.is_some() || worker.time.format() != self.time.format() {
            return None;
        }
        Some(ParsedBlock {
            out: worker.out,
            lines: worker.line_no,
        })
    }

    /// A parser for one block: this one's columns, delimiter and time
    /// format, with empty rows, empty id tables of this one's kinds, and
    /// lines counted from 0.
    fn worker(&self) -> TextParser<'_> {
        let out = Interactions {
            users: IdTable::new(self.out.users.kind()),
            items: IdTable::new(self.out.items.kind()),
            rating: self.out.rating.as_ref().map(|_| Vec::new()),
            event: self.out.event.as_ref().map(|_| Vec::new()),
            // A log has a handful of event types: a copy keeps their codes.
            events: self.out.events.clone(),
            ..Interactions::default()
        };
        TextParser {
            path: self.path,
            spec: self.spec,
            format: self.format,
            delimiter: self.delimiter.clone(),
            header: self.header,
            cols: self.cols.clone(),
            needed: self.needed,
            strict_ids: self.strict_ids,
            time: self.time.clone(),
            last_user: LastId::default(),
            last_item: LastId::default(),
            last_event: LastId::default(),
            known_users: Some(&self.out.users),
            known_items: Some(&self.out.items),
            line_no: 0,
            blank_since: None,
            fields: Vec::with_capacity(self.needed),
            out,
        }
    }

    /// Appends a block's rows, its new ids taken into the file's tables.
    /// `known`: how many users and items the tables had when the block's
    /// batch began (the worker's codes from there on are its new ids).
    fn merge(&mut self, block: ParsedBlock, known: (u32, u32)) {
        let users = self.out.users.absorb(&block.out.users);
        let items = self.out.items.absorb(&block.out.items);
        // Rayon writes each column's new rows in place on all threads (the
        // columns' first touch of their pages is most of this work).
        let out = &mut self.out;
        let (user, item) = (&block.out.user, &block.out.item);
        out.user
            .par_extend(user.par_iter().map(|&c| file_code(c, known.0, &users)));
        out.item
            .par_extend(item.par_iter().map(|&c| file_code(c, known.1, &items)));
        out.time.par_extend(block.out.time.par_iter().copied());
        if let (Some(all), Some(ratings)) = (&mut out.rating, &block.out.rating) {
            all.par_extend(ratings.par_iter().copied());
        }
        if let (Some(all), Some(events)) = (&mut out.event, &block.out.event) {
            let names = out.events.absorb(&block.out.events);
            all.extend(events.iter().map(|&c| names[c as usize]));
        }
        self.line_no += block.lines;
    }
}

/// A worker's code as the file's: below `known` it is the file's already,
/// from there on it indexes `new` (the codes of the block's new ids).
#[inline]
fn file_code(c: u32, known: u32, new: &[u32]) -> u32 {
    if c < known {
        c
    } else {
        new[(c - known) as usize]
    }
}

/// Reads up to `batch` blocks into `blocks`: each is `carry` (the start of
/// a line) and then `block` bytes more, cut after its last newline, the rest
/// carried to the next. A block without a newline is kept whole (a very long
/// line, which `parse_block` refuses). Returns whether the reader is done;
/// `carry` then holds the last line if it has no newline.
fn read_batch<R: Read>(
    reader: &mut R,
    blocks: &mut Vec<Vec<u8>>,
    carry: &mut Vec<u8>,
    batch: usize,
    block: usize,
) -> std::io::Result<bool> {
    let mut used = 0;
    let mut at_end = false;
    while used < batch && !at_end {
        if used == blocks.len() {
            blocks.push(Vec::new());
        }
        let text = &mut blocks[used];
        text.clear();
        text.append(carry);
        text.reserve(block);
        // Buffers are reused: reading into spare capacity writes no zeros first.
        let read = reader.by_ref().take(block as u64).read_to_end(text)?;
        at_end = read < block;
        let end = match memchr::memrchr(b'\n', text) {
            Some(newline) => newline + 1,
            None if at_end => 0,
            None => text.len(),
        };
        carry.extend_from_slice(&text[end..]);
        text.truncate(end);
        if !text.is_empty() {
            used += 1;
        }
    }
    blocks.truncate(used);
    Ok(at_end)
}

#[cfg(test)]
mod tests {
    //! The parallel path against the sequential one (`parse_interactions`,
    //! which never goes parallel) on logs of many tiny blocks: the same rows,
    //! codes, id tables and source, or the same error.

    use std::path::Path;

    use super::BlockReport;
    use crate::read::text::parse_with;
    use crate::read::text_parser::Plan;
    use crate::{Format, IdKind, InputSpec, Interactions, RawId, TimeFormat, parse_interactions};

    /// A first chunk of a few lines, then blocks of a few lines each.
    const TINY: Plan = Plan {
        chunk: 256,
        block: 300,
        batch: 4,
        parallel: true,
    };

    /// Reads `text` sequentially and through the parallel path on 4 threads
    /// and on 1, asserts all three agree (the error message when it fails),
    /// and returns the result and the 4-thread report.
    fn read_both(name: &str, text: &str) -> (Result<Interactions, String>, BlockReport) {
        let path = Path::new(name);
        let format = Format::from_path(path).expect("a known extension");
        let spec = InputSpec::default();
        let sequential = parse_interactions(text.as_bytes(), path, format, &spec);
        let sequential = sequential.map_err(|e| e.to_string());
        let mut report = BlockReport::default();
        for threads in [4, 1] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut this_report = BlockReport::default();
            let parallel = pool.install(|| {
                let size = Some(text.len() as u64);
                parse_with(
                    text.as_bytes(),
                    path,
                    format,
                    &spec,
                    size,
                    TINY,
                    &mut this_report,
                )
            });
            let parallel = parallel.map_err(|e| e.to_string());
            assert_eq!(parallel, sequential, "{threads} threads");
            if threads == 4 {
                report = this_report;
            }
        }
        (sequential, report)
    }

    /// `header` and `rows` lines from `line(i)`.
    fn log(header: &str, rows: usize, line: impl Fn(usize) -> String) -> String {
        let mut text = format!("{header}\n");
        for i in 0..rows {
            text.push_str(&line(i));
            text.push('\n');
        }
        text
    }

    /// The item of row `i`: 421 distinct ones, in a scrambled order.
    fn item(i: usize) -> usize {
        i * 7919 % 421
    }

    /// Asserts the whole file went through merged blocks.
    fn all_parallel(report: &BlockReport) {
        assert!(report.merged >= 20, "{report:?}");
        assert_eq!(report.sequential_from, None);
    }

    /// Asserts blocks were merged, then the sequential path took over from
    /// the start of the block holding `line` (at most a block earlier).
    fn sequential_from_near(report: &BlockReport, line: u64) {
        assert!(report.merged >= 10, "{report:?}");
        let from = report.sequential_from.expect("a dropped block");
        assert!(from <= line && from + 30 > line, "{report:?}, line {line}");
    }

    #[test]
    fn only_big_files_with_several_threads_go_parallel() {
        let parallel = |threads: usize, size: Option<u64>| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| Plan::for_input(size).parallel)
        };
        let gib = Some(1 << 30);
        assert!(parallel(2, gib));
        assert!(!parallel(1, gib), "one thread reads sequentially");
        assert!(!parallel(2, None), "a stream of unknown size");
        assert!(!parallel(2, Some(20 << 20)), "a small file");
    }

    #[test]
    fn string_ids_number_by_first_appearance_across_blocks() {
        let text = log("user,item,ts", 3000, |i| {
            format!("user{},sku{:x},{}", i / 7, item(i), 1_600_000_000 + i)
        });
        let (r, report) = read_both("log.csv", &text);
        let r = r.unwrap();
        all_parallel(&report);
        assert_eq!(r.len(), 3000);
        assert_eq!(r.users.kind(), IdKind::Str);
        assert_eq!(r.items.len(), 421);
        assert_eq!(
            r.items.get(r.item[2999]),
            Some(RawId::Str(format!("sku{:x}", item(2999))))
        );
        // Codes by first appearance: each new code is the next one.
        let mut next = 0;
        for &c in &r.item {
            assert!(c <= next);
            next = next.max(c + 1);
        }
    }

    #[test]
    fn int_ids_and_ints_turning_into_strings_in_a_late_block() {
        let ints = log("user,item,ts", 3000, |i| {
            format!("{},{},{i}", i / 5, item(i))
        });
        let (r, report) = read_both("log.csv", &ints);
        all_parallel(&report);
        let r = r.unwrap();
        assert_eq!((r.users.kind(), r.items.kind()), (IdKind::Int, IdKind::Int));

        // Row 2000's item is not a canonical integer: both columns' earlier
        // integers become text, keeping their codes.
        for odd in ["x7", "007"] {
            let mixed = log("user,item,ts", 3000, |i| {
                let item = if i == 2000 {
                    odd.to_string()
                } else {
                    item(i).to_string()
                };
                format!("{},{item},{i}", i / 5)
            });
            let (m, report) = read_both("log.csv", &mixed);
            all_parallel(&report);
            let m = m.unwrap();
            assert_eq!((m.users.kind(), m.items.kind()), (IdKind::Int, IdKind::Str));
            assert_eq!(m.items.get(m.item[2000]), Some(RawId::from(odd)));
            assert_eq!(
                m.items.get(m.item[1999]),
                Some(RawId::Str(item(1999).to_string()))
            );
        }
    }

    #[test]
    fn iso_datetimes_and_decimal_seconds() {
        let iso = log("user,item,time", 3000, |i| {
            format!(
                "u{},i{},2024-03-{:02}T{:02}:15:00Z",
                i / 9,
                item(i),
                1 + i % 28,
                i % 24
            )
        });
        let (r, report) = read_both("log.csv", &iso);
        all_parallel(&report);
        assert_eq!(
            r.unwrap().source.time_format,
            Some(TimeFormat::DateTime { zone: true })
        );

        // Integer seconds, then a decimal in a late block: the format turns
        // into decimal seconds, as it does sequentially.
        let decimal = log("user,item,ts", 3000, |i| {
            let frac = if i == 2500 { ".5" } else { "" };
            format!("u{},i{},{}{frac}", i / 9, item(i), 1_600_000_000 + i)
        });
        let (r, report) = read_both("log.csv", &decimal);
        sequential_from_near(&report, 2502);
        let r = r.unwrap();
        assert_eq!(r.time[2500], 1_600_002_500_500_000);
        assert!(matches!(
            r.source.time_format,
            Some(TimeFormat::Number { decimals: true, .. })
        ));
    }

    #[test]
    fn movielens_layout_with_lf_crlf_and_no_final_newline() {
        let ml = log("userId,movieId,rating,timestamp", 3000, |i| {
            format!(
                "{},{},{}.{},{}",
                i / 20,
                item(i),
                1 + i % 5,
                i % 2 * 5,
                1_200_000_000 + i
            )
        });
        let (r, report) = read_both("ratings.csv", &ml);
        all_parallel(&report);
        let r = r.unwrap();
        assert_eq!(r.rating.as_ref().unwrap()[3], 4.5);
        let crlf = ml.replace('\n', "\r\n");
        let (r_crlf, report) = read_both("ratings.csv", &crlf);
        all_parallel(&report);
        assert_eq!(r_crlf.unwrap(), r);
        let (r_open, report) = read_both("ratings.csv", ml.trim_end());
        all_parallel(&report);
        assert_eq!(r_open.unwrap(), r);
    }

    /// A log of 3000 rows `u..,i..,seconds`, row `i` replaced by `odd(i)`
    /// where that gives a line.
    fn events(odd: impl Fn(usize) -> Option<String>) -> String {
        log("user,item,ts", 3000, |i| {
            odd(i).unwrap_or_else(|| format!("u{},i{},{i}", i / 9, item(i)))
        })
    }

    #[test]
    fn a_quoted_field_in_a_late_block_hands_over_to_the_csv_crate() {
        let text = events(|i| (i == 2500).then(|| "\"u,1\",i5,2500".to_string()));
        let (r, report) = read_both("log.csv", &text);
        sequential_from_near(&report, 2502);
        let r = r.unwrap();
        assert_eq!(r.users.get(r.user[2500]), Some(RawId::from("u,1")));
        assert_eq!(r.len(), 3000);
    }

    #[test]
    fn an_error_in_a_late_block_names_the_sequential_line() {
        let text = events(|i| (i == 2500).then(|| "u277,i5,soon".to_string()));
        let (r, report) = read_both("log.csv", &text);
        sequential_from_near(&report, 2502);
        let msg = r.unwrap_err();
        assert!(msg.contains("line 2502: field `ts`"), "{msg}");

        let short = events(|i| (i == 2500).then(|| "u277,i5".to_string()));
        let (r, report) = read_both("log.csv", &short);
        sequential_from_near(&report, 2502);
        let msg = r.unwrap_err();
        assert!(msg.contains("line 2502") && msg.contains("`ts`"), "{msg}");
    }

    #[test]
    fn blank_lines_mid_file_are_errors_and_at_the_end_are_not() {
        let text = events(|_| None);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(2500, "");
        let (r, report) = read_both("log.csv", &(lines.join("\n") + "\n"));
        sequential_from_near(&report, 2501);
        let msg = r.unwrap_err();
        assert!(msg.contains("line 2501: blank line"), "{msg}");

        let (r, report) = read_both("log.csv", &(text.clone() + "\n\r\n\n"));
        assert!(report.merged >= 20, "{report:?}");
        assert_eq!(r.unwrap().len(), 3000);
    }

    #[test]
    fn a_line_over_the_limit_in_a_late_block_is_refused_at_its_line() {
        let mut text = events(|_| None);
        // Longer than the limit and a chunk: refused wherever reads fall.
        text.push_str(&"x".repeat(2 * super::MAX_LINE));
        text.push_str(",i1,5\n");
        let (r, report) = read_both("log.csv", &text);
        sequential_from_near(&report, 3002);
        let msg = r.unwrap_err();
        assert!(msg.contains("line 3002"), "{msg}");
    }
}
