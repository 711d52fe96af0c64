//! Raw ids as the input has them, and the tables that give them dense codes.
//!
//! A column of ids is either integers or strings. Rows carry `u32` codes,
//! numbered 0.. by first appearance; an [`IdTable`] maps codes back to the
//! raw ids. String ids sit in one byte arena with offsets (one allocation
//! for the whole column, not one `String` per id) and are interned through
//! a hash table that stores only codes.

use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use serde::{Deserialize, Serialize};

/// A raw id exactly as the input has it: an integer or a string.
///
/// In JSON (`vocab.json`) an integer id is a number and a string id a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawId {
    /// An integer id (e.g. MovieLens `movieId`).
    Int(i64),
    /// A string id (e.g. `A3SGXH7AUHU8GW`).
    Str(String),
}

impl RawId {
    /// Reads `text` as an id of `kind`: integer ids must be integers, string
    /// ids are taken as they are.
    pub fn parse(text: &str, kind: IdKind) -> Result<RawId, String> {
        match kind {
            IdKind::Str => Ok(RawId::Str(text.to_string())),
            IdKind::Int => text
                .trim()
                .parse()
                .map(RawId::Int)
                .map_err(|_| format!("expected an integer id, found {:?}", cut(text, 80))),
        }
    }
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawId::Int(v) => write!(f, "{v}"),
            RawId::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for RawId {
    fn from(v: i64) -> RawId {
        RawId::Int(v)
    }
}

impl From<&str> for RawId {
    fn from(s: &str) -> RawId {
        RawId::Str(s.to_string())
    }
}

/// Whether a column's ids are integers or strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// Every id is an integer.
    Int,
    /// Ids are strings (any UTF-8).
    Str,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Int => "integers",
            IdKind::Str => "strings",
        })
    }
}

/// The raw ids of one column, numbered 0.. by first appearance.
#[derive(Clone, Default)]
pub struct IdTable {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Int {
        ids: Vec<i64>,
        index: HashMap<i64, u32, BuildHasherDefault<IntHasher>>,
    },
    Str(StrTable),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Int {
            ids: Vec::new(),
            index: HashMap::default(),
        }
    }
}

/// String ids: `bytes[ends[c - 1]..ends[c]]` is the id of code `c`.
#[derive(Clone, Default)]
struct StrTable {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Codes, hashed by their string.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

/// The bytes of code `c` in an arena.
fn arena_slice<'a>(bytes: &'a [u8], ends: &[usize], c: u32) -> &'a [u8] {
    let c = c as usize;
    let start = if c == 0 { 0 } else { ends[c - 1] };
    &bytes[start..ends[c]]
}

impl StrTable {
    fn get(&self, code: u32) -> &str {
        // Only valid UTF-8 is ever interned.
        std::str::from_utf8(arena_slice(&self.bytes, &self.ends, code))
            .expect("interned ids are UTF-8")
    }

    fn find(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s.as_bytes());
        self.index
            .find(hash, |&c| {
                arena_slice(&self.bytes, &self.ends, c) == s.as_bytes()
            })
            .copied()
    }

    fn intern(&mut self, s: &str) -> u32 {
        let StrTable {
            bytes,
            ends,
            index,
            hasher,
        } = self;
        let hash = hasher.hash_one(s.as_bytes());
        if let Some(&code) = index.find(hash, |&c| arena_slice(bytes, ends, c) == s.as_bytes()) {
            return code;
        }
        let code = ends.len() as u32;
        bytes.extend_from_slice(s.as_bytes());
        ends.push(bytes.len());
        index.insert_unique(hash, code, |&c| {
            hasher.hash_one(arena_slice(bytes, ends, c))
        });
        code
    }
}

impl IdTable {
    /// An empty table of `kind`.
    pub fn new(kind: IdKind) -> IdTable {
        IdTable {
            repr: match kind {
                IdKind::Int => Repr::default(),
                IdKind::Str => Repr::Str(StrTable::default()),
            },
        }
    }

    /// A table holding `ids` in this order (codes 0..). The ids must all be of
    /// one kind and distinct; otherwise the first offending id is returned.
    pub fn from_ids(ids: &[RawId]) -> Result<IdTable, RawId> {
        let kind = match ids.first() {
            Some(RawId::Str(_)) => IdKind::Str,
            _ => IdKind::Int,
        };
        let mut table = IdTable::new(kind);
        for (i, id) in ids.iter().enumerate() {
            let code = match (id, &mut table.repr) {
                (RawId::Int(v), Repr::Int { .. }) => table.intern_int(*v),
                (RawId::Str(s), Repr::Str(t)) => t.intern(s),
                _ => return Err(id.clone()),
            };
            if code as usize != i {
                return Err(id.clone());
            }
        }
        Ok(table)
    }

    /// Whether the ids are integers or strings.
    pub fn kind(&self) -> IdKind {
        match self.repr {
            Repr::Int { .. } => IdKind::Int,
            Repr::Str(_) => IdKind::Str,
        }
    }

    /// Number of distinct ids.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Int { ids, .. } => ids.len(),
            Repr::Str(t) => t.ends.len(),
        }
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw id of `code`, if there is one.
    pub fn get(&self, code: u32) -> Option<RawId> {
        if code as usize >= self.len() {
            return None;
        }
        Some(match &self.repr {
            Repr::Int { ids, .. } => RawId::Int(ids[code as usize]),
            Repr::Str(t) => RawId::Str(t.get(code).to_string()),
        })
    }

    /// The code of a raw id, if the table holds it (an id of the other kind
    /// is never held).
    pub fn code(&self, id: &RawId) -> Option<u32> {
        match (&self.repr, id) {
            (Repr::Int { index, .. }, RawId::Int(v)) => index.get(v).copied(),
            (Repr::Str(t), RawId::Str(s)) => t.find(s),
            _ => None,
        }
    }

    /// Every id in code order.
    pub fn to_vec(&self) -> Vec<RawId> {
        (0..self.len() as u32)
            .map(|c| self.get(c).expect("in range"))
            .collect()
    }

    /// The code of integer `v`, added at the end when new. Panics on a
    /// string table (callers convert first).
    pub(crate) fn intern_int(&mut self, v: i64) -> u32 {
        match &mut self.repr {
            Repr::Int { ids, index } => *index.entry(v).or_insert_with(|| {
                ids.push(v);
                ids.len() as u32 - 1
            }),
            Repr::Str(_) => panic!("intern_int on a string table"),
        }
    }

    /// The code of string `s`, added at the end when new; an integer table
    /// turns into a string table first (its ids as decimal text, same codes).
    pub(crate) fn intern_str(&mut self, s: &str) -> u32 {
        self.make_strings();
        match &mut self.repr {
            Repr::Str(t) => t.intern(s),
            Repr::Int { .. } => unreachable!("converted above"),
        }
    }

    /// The code of the integer id `v` as the reader interns it (in a string
    /// table: its decimal text), if the table holds it.
    #[inline]
    pub(crate) fn find_int(&self, v: i64) -> Option<u32> {
        match &self.repr {
            Repr::Int { index, .. } => index.get(&v).copied(),
            Repr::Str(t) => t.find(&v.to_string()),
        }
    }

    /// The code of the string id `s` as the reader interns it (in an integer
    /// table: `s` if it is a canonical integer), if the table holds it.
    #[inline]
    pub(crate) fn find_str(&self, s: &str) -> Option<u32> {
        match &self.repr {
            Repr::Int { index, .. } => index.get(&canonical_int(s.as_bytes())?).copied(),
            Repr::Str(t) => t.find(s),
        }
    }

    /// Takes in the ids of `other` (a table built apart, e.g. from one block
    /// of a file) in its code order, as if they were interned here one by
    /// one; returns the code here of each of `other`'s codes. Integers going
    /// into a string table become their decimal text, as in
    /// [`Interactions::push`](crate::Interactions::push).
    pub(crate) fn absorb(&mut self, other: &IdTable) -> Vec<u32> {
        match &other.repr {
            Repr::Int { ids, .. } => ids
                .iter()
                .map(|&v| match self.kind() {
                    IdKind::Int => self.intern_int(v),
                    IdKind::Str => self.intern_str(&v.to_string()),
                })
                .collect(),
            Repr::Str(t) => (0..t.ends.len() as u32)
                .map(|c| self.intern_str(t.get(c)))
                .collect(),
        }
    }

    /// Turns an integer table into strings (decimal text), keeping codes.
    /// Lossless because only canonical integers (no sign `+`, no leading
    /// zeros) are ever read as integers.
    fn make_strings(&mut self) {
        if let Repr::Int { ids, .. } = &self.repr {
            let mut strings = StrTable::default();
            for v in ids {
                strings.intern(&v.to_string());
            }
            self.repr = Repr::Str(strings);
        }
    }

    /// A new table holding the ids of `codes`, in that order (codes must be
    /// distinct).
    pub(crate) fn subset(&self, codes: &[u32]) -> IdTable {
        let mut out = IdTable::new(self.kind());
        for &c in codes {
            match &self.repr {
                Repr::Int { ids, .. } => out.intern_int(ids[c as usize]),
                Repr::Str(t) => out.intern_str(t.get(c)),
            };
        }
        out
    }
}

impl PartialEq for IdTable {
    fn eq(&self, other: &IdTable) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Int { ids: a, .. }, Repr::Int { ids: b, .. }) => a == b,
            (Repr::Str(a), Repr::Str(b)) => a.ends == b.ends && a.bytes == b.bytes,
            // Two empty tables are equal whatever their kind.
            _ => self.is_empty() && other.is_empty(),
        }
    }
}

impl fmt::Debug for IdTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdTable({}, {} ids", self.kind(), self.len())?;
        for c in 0..self.len().min(5) as u32 {
            write!(f, ", {}", self.get(c).expect("in range"))?;
        }
        f.write_str(if self.len() > 5 { ", ...)" } else { ")" })
    }
}

impl Serialize for IdTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        match &self.repr {
            Repr::Int { ids, .. } => ids.iter().try_for_each(|v| seq.serialize_element(v))?,
            Repr::Str(t) => {
                (0..t.ends.len() as u32).try_for_each(|c| seq.serialize_element(t.get(c)))?
            }
        }
        seq.end()
    }
}

/// The longest raw id accepted, in bytes. Ids are keys (a user, a product,
/// a session); a longer one is a wrong column or a broken file, and would
/// otherwise go whole into `vocab.json` and every message that shows it.
pub const MAX_ID_BYTES: usize = 1024;

/// Why an integer id is refused: ids are 0 or more in every format (-1
/// often marks a missing id).
pub(crate) const NEGATIVE_ID: &str = "a negative id (integer ids must be non-negative)";

/// What is wrong with the bytes of a string id, if anything: empty, longer
/// than [`MAX_ID_BYTES`], or holding a NUL byte (text never has one; a
/// binary file read as text does).
#[inline]
pub(crate) fn id_problem(text: &[u8]) -> Option<&'static str> {
    const TOO_LONG: &str = "an id longer than 1024 bytes (the longest accepted)";
    if text.is_empty() {
        Some("expected an id, the field is empty")
    } else if text.len() > MAX_ID_BYTES {
        Some(TOO_LONG)
    } else if memchr::memchr(0, text).is_some() {
        Some("an id holding a NUL byte")
    } else {
        None
    }
}

/// Reads `text` as a canonical integer: an optional `-`, then digits with
/// no leading zero (`0` itself is fine), fitting in i64. Anything else (e.g.
/// `007`, `+5`, `1.0`) is not an integer id, so reading a column as strings
/// instead never merges two different ids.
#[inline]
pub(crate) fn canonical_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty()
        || digits.len() > 19
        || (digits[0] == b'0' && (digits.len() > 1 || negative))
    {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(d as u64)?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

/// `s` cut to at most `max` characters, with `…` when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// Bytes as text for a message: lossy UTF-8, cut to `max` characters.
pub(crate) fn cut_bytes(b: &[u8], max: usize) -> String {
    // Never decode more than a little past what is shown.
    let b = &b[..b.len().min(max * 4 + 4)];
    cut(&String::from_utf8_lossy(b), max)
}

/// A hasher for integer keys: one multiply instead of SipHash, which made
/// reading 10M rows about 1.5x slower (measured with the `read` bench). Not
/// DoS-resistant, which does not matter for ids from a local file.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }

    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // The table picks buckets from the high bits (hashbrown) or low bits:
        // bring the well-mixed middle bits of the product to both ends.
        self.0.rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ids_are_bounded_and_free_of_nul() {
        assert_eq!(id_problem(b"B00X4WHP5E"), None);
        assert_eq!(id_problem(&[b'a'; MAX_ID_BYTES]), None);
        let long = id_problem(&[b'a'; MAX_ID_BYTES + 1]).unwrap();
        assert!(long.contains(&MAX_ID_BYTES.to_string()), "{long}");
        assert_eq!(id_problem(b"ab\0c"), Some("an id holding a NUL byte"));
        assert!(id_problem(b"").is_some());
    }

    #[test]
    fn canonical_integers_only() {
        assert_eq!(canonical_int(b"0"), Some(0));
        assert_eq!(canonical_int(b"42"), Some(42));
        assert_eq!(canonical_int(b"-7"), Some(-7));
        assert_eq!(canonical_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(canonical_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"007",
            b"-0",
            b"+5",
            b"1.0",
            b" 1",
            b"9223372036854775808",
            b"x",
        ] {
            assert_eq!(
                canonical_int(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tables_number_by_first_appearance_and_convert_losslessly() {
        let mut t = IdTable::new(IdKind::Int);
        assert_eq!(t.intern_int(30), 0);
        assert_eq!(t.intern_int(-4), 1);
        assert_eq!(t.intern_int(30), 0);
        assert_eq!(t.intern_str("B00X"), 2);
        assert_eq!(t.kind(), IdKind::Str);
        assert_eq!(t.intern_str("30"), 0, "the integer 30 became the string 30");
        assert_eq!(
            t.to_vec(),
            vec![RawId::from("30"), RawId::from("-4"), RawId::from("B00X")]
        );
        assert_eq!(t.code(&RawId::from("B00X")), Some(2));
        assert_eq!(t.code(&RawId::Int(30)), None, "kinds never mix");
        let sub = t.subset(&[2, 0]);
        assert_eq!(sub.to_vec(), vec![RawId::from("B00X"), RawId::from("30")]);
        assert_eq!(IdTable::from_ids(&sub.to_vec()).unwrap(), sub);
        assert!(IdTable::from_ids(&[RawId::Int(1), RawId::Int(1)]).is_err());
        assert!(IdTable::from_ids(&[RawId::Int(1), RawId::from("a")]).is_err());
    }

    #[test]
    fn raw_ids_in_json_keep_their_kind() {
        let ids = vec![RawId::Int(7), RawId::from("7"), RawId::from("é x")];
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(json, r#"[7,"7","é x"]"#);
        assert_eq!(serde_json::from_str::<Vec<RawId>>(&json).unwrap(), ids);
    }
}
