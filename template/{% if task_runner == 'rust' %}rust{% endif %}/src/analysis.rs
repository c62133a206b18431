//! Document, review and CSV statistics for the example tasks.
//!
//! Each function gives exactly the answer of its pure-Python reference in `examples/analysis.py`
//! (same counts, bit-identical floats), so a service answers the same with or without the crate.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// Size, line and word counts and SHA-256 of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentStats {
    pub bytes: usize,
    pub lines: usize,
    pub words: usize,
    /// Lower-case hex.
    pub sha256: String,
}

pub fn document_stats(data: &[u8]) -> DocumentStats {
    let newlines = data.iter().filter(|&&byte| byte == b'\n').count();
    let unterminated_last_line = !data.is_empty() && !data.ends_with(b"\n");
    let sha256 = Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        });
    DocumentStats {
        bytes: data.len(),
        lines: newlines + usize::from(unterminated_last_line),
        words: words(data).count(),
        sha256,
    }
}

/// Python's `bytes.split()` whitespace, which (unlike `u8::is_ascii_whitespace`) includes `\v`.
fn is_python_space(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn words(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(is_python_space).filter(|word| !word.is_empty())
}

const POSITIVE_WORDS: [&[u8]; 15] = [
    b"great",
    b"excellent",
    b"amazing",
    b"love",
    b"loved",
    b"perfect",
    b"good",
    b"fantastic",
    b"wonderful",
    b"happy",
    b"recommend",
    b"best",
    b"awesome",
    b"nice",
    b"fast",
];

const NEGATIVE_WORDS: [&[u8]; 15] = [
    b"bad",
    b"terrible",
    b"awful",
    b"hate",
    b"hated",
    b"poor",
    b"broken",
    b"worst",
    b"slow",
    b"disappointing",
    b"disappointed",
    b"refund",
    b"useless",
    b"horrible",
    b"waste",
];

/// Counts of positive and negative words in a review.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sentiment {
    pub positive: usize,
    pub negative: usize,
}

impl Sentiment {
    pub fn score(&self) -> i64 {
        self.positive as i64 - self.negative as i64
    }

    pub fn label(&self) -> &'static str {
        match self.score() {
            score if score > 0 => "positive",
            score if score < 0 => "negative",
            _ => "neutral",
        }
    }
}

/// Words are ASCII-lower-cased with ASCII punctuation trimmed from both ends.
pub fn review_sentiment(text: &str) -> Sentiment {
    let mut sentiment = Sentiment::default();
    for token in words(text.as_bytes()) {
        let word = trim_punctuation(token).to_ascii_lowercase();
        if POSITIVE_WORDS.contains(&word.as_slice()) {
            sentiment.positive += 1;
        } else if NEGATIVE_WORDS.contains(&word.as_slice()) {
            sentiment.negative += 1;
        }
    }
    sentiment
}

fn trim_punctuation(token: &[u8]) -> &[u8] {
    let start = token
        .iter()
        .position(|byte| !byte.is_ascii_punctuation())
        .unwrap_or(token.len());
    let end = token
        .iter()
        .rposition(|byte| !byte.is_ascii_punctuation())
        .map_or(start, |last| last + 1);
    &token[start..end]
}

/// Statistics of the numeric cells of one CSV column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColumnStats {
    pub count: usize,
    /// Summed in row order, as the reference does, so rounding is the same.
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl ColumnStats {
    fn of(value: f64) -> Self {
        ColumnStats {
            count: 1,
            // The reference starts its sum at 0.0, which turns a lone -0.0 into 0.0.
            sum: 0.0 + value,
            min: value,
            max: value,
        }
    }

    fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        // Strict comparisons keep the first of equal values, as Python's min() and max() do
        // (it matters for 0.0 and -0.0).
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Per-column statistics of the numeric cells of a CSV document with a header row, in the
/// order the columns first appear; columns without a numeric cell are left out.
///
/// The document is decoded as UTF-8 with invalid bytes replaced and read as Python's
/// `csv.reader` reads it; a cell is numeric when, stripped of spaces, it is a plain decimal
/// number.
pub fn csv_column_stats(data: &[u8]) -> Result<Vec<(String, ColumnStats)>, CsvError> {
    let text = String::from_utf8_lossy(data);
    let mut records = CsvRecords::new(&text);
    let Some(header) = records.next().transpose()? else {
        return Ok(Vec::new());
    };
    // Like the keys of a Python dict, a repeated column name names one column.
    let mut names: Vec<String> = Vec::new();
    let slots: Vec<usize> = header
        .into_iter()
        .map(|name| match names.iter().position(|known| *known == name) {
            Some(slot) => slot,
            None => {
                names.push(name);
                names.len() - 1
            }
        })
        .collect();
    let mut stats: Vec<Option<ColumnStats>> = vec![None; names.len()];
    for record in records {
        for (&slot, cell) in slots.iter().zip(&record?) {
            if let Some(value) = plain_number(cell.trim_matches(' ')) {
                match &mut stats[slot] {
                    Some(column) => column.add(value),
                    empty => *empty = Some(ColumnStats::of(value)),
                }
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(stats)
        .filter_map(|(name, column)| Some((name, column?)))
        .collect())
}

/// The value of `[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?` (ASCII digits), else `None`.
fn plain_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits_from = |at: usize| {
        bytes.get(at..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let whole = digits_from(at);
    at += whole;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        fraction = digits_from(at + 1);
        at += 1 + fraction;
    }
    if whole == 0 && fraction == 0 {
        return None;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
        let exponent = digits_from(at);
        if exponent == 0 {
            return None;
        }
        at += exponent;
    }
    // Rust's parsing, like Python's float(), rounds correctly: the same text gives the same bits.
    if at == bytes.len() {
        text.parse().ok()
    } else {
        None
    }
}

/// What Python's `csv.Error` would say about the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvError(pub String);

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CsvError {}

/// Python's default `csv.field_size_limit()`, in characters.
const FIELD_LIMIT: usize = 131_072;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CsvState {
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    QuoteInQuotedField,
    EatNewline,
}

/// The records of a CSV text as Python's `csv.reader` reads it from `io.StringIO(text,
/// newline="")` with the default (excel) dialect: a port of the state machine in CPython's
/// `Modules/_csv.c`, reduced to that dialect.
struct CsvRecords<'a> {
    rest: &'a str,
    state: CsvState,
    fields: Vec<String>,
    field: String,
    field_len: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        CsvRecords {
            rest: text,
            state: CsvState::StartRecord,
            fields: Vec::new(),
            field: String::new(),
            field_len: 0,
        }
    }

    /// The next line with its ending (`\n`, `\r\n` or `\r`), as `StringIO(newline="")` yields it.
    fn next_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let end = match self.rest.find(['\n', '\r']) {
            Some(at) if self.rest[at..].starts_with("\r\n") => at + 2,
            Some(at) => at + 1,
            None => self.rest.len(),
        };
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(line)
    }

    fn save_field(&mut self) {
        self.fields.push(std::mem::take(&mut self.field));
        self.field_len = 0;
    }

    fn add_char(&mut self, c: char) -> Result<(), CsvError> {
        if self.field_len >= FIELD_LIMIT {
            return Err(CsvError(format!(
                "field larger than field limit ({FIELD_LIMIT})"
            )));
        }
        self.field.push(c);
        self.field_len += 1;
        Ok(())
    }

    fn end_field(&mut self, next: CsvState) {
        self.save_field();
        self.state = next;
    }

    /// One step of the machine; `None` is the end of a line.
    fn process(&mut self, c: Option<char>) -> Result<(), CsvError> {
        use CsvState::*;
        let newline = matches!(c, Some('\n' | '\r'));
        let end_of_record = if c.is_none() { StartRecord } else { EatNewline };
        match self.state {
            StartRecord if c.is_none() => {}
            StartRecord if newline => self.state = EatNewline,
            StartRecord | StartField => match c {
                None | Some('\n' | '\r') => self.end_field(end_of_record),
                Some('"') => self.state = InQuotedField,
                Some(',') => self.end_field(StartField),
                Some(other) => {
                    self.add_char(other)?;
                    self.state = InField;
                }
            },
            InField => match c {
                None | Some('\n' | '\r') => self.end_field(end_of_record),
                Some(',') => self.end_field(StartField),
                Some(other) => self.add_char(other)?,
            },
            InQuotedField => match c {
                None => {}
                Some('"') => self.state = QuoteInQuotedField,
                Some(other) => self.add_char(other)?,
            },
            QuoteInQuotedField => match c {
                Some('"') => {
                    self.add_char('"')?;
                    self.state = InQuotedField;
                }
                Some(',') => self.end_field(StartField),
                None | Some('\n' | '\r') => self.end_field(end_of_record),
                // Text after a closing quote joins the field (the non-strict dialect).
                Some(other) => {
                    self.add_char(other)?;
                    self.state = InField;
                }
            },
            EatNewline => match c {
                Some('\n' | '\r') => {}
                None => self.state = StartRecord,
                Some(_) => {
                    return Err(CsvError(
                        "new-line character seen in unquoted field - do you need to open the \
                         file with newline=''?"
                            .into(),
                    ));
                }
            },
        }
        Ok(())
    }
}

impl Iterator for CsvRecords<'_> {
    type Item = Result<Vec<String>, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.fields.clear();
        self.field.clear();
        self.field_len = 0;
        self.state = CsvState::StartRecord;
        loop {
            let Some(line) = self.next_line() else {
                // A quoted field still open at the end of the data ends there.
                if self.state != CsvState::InQuotedField {
                    return None;
                }
                self.end_field(CsvState::StartRecord);
                return Some(Ok(std::mem::take(&mut self.fields)));
            };
            let processed = line
                .chars()
                .map(Some)
                .chain([None])
                .try_for_each(|c| self.process(c));
            if let Err(error) = processed {
                return Some(Err(error));
            }
            if self.state == CsvState::StartRecord {
                return Some(Ok(std::mem::take(&mut self.fields)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<Vec<String>> {
        CsvRecords::new(text).map(Result::unwrap).collect()
    }

    #[test]
    fn document_stats_counts_like_python_bytes_methods() {
        let stats = document_stats(b"one two\tthree\r\nfour\x0bfive\x0c six\n\nlast");
        assert_eq!((stats.bytes, stats.lines, stats.words), (35, 4, 7));
        assert_eq!(document_stats(b"a\nb\n").lines, 2);
        assert_eq!(document_stats(b"a\nb").lines, 2);
        assert_eq!(document_stats(b" \n ").words, 0);
    }

    #[test]
    fn document_stats_of_nothing() {
        let stats = document_stats(b"");
        assert_eq!((stats.bytes, stats.lines, stats.words), (0, 0, 0));
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(stats.sha256, empty);
    }

    #[test]
    fn document_stats_hashes_every_byte() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(document_stats(b"abc").sha256, abc);
    }

    #[test]
    fn review_sentiment_trims_punctuation_and_ignores_case() {
        let review = review_sentiment("GREAT product!! \"Loved\" it... but (slow) ship-ping; bad?");
        assert_eq!((review.positive, review.negative), (2, 2));
        assert_eq!((review.score(), review.label()), (0, "neutral"));
        assert_eq!(review_sentiment("good, good, awful").label(), "positive");
        assert_eq!(review_sentiment("waste of money").label(), "negative");
    }

    #[test]
    fn review_sentiment_keeps_non_ascii_letters_inside_words() {
        // Only ASCII punctuation is trimmed: "¡good!" stays "¡good".
        assert_eq!(review_sentiment("gréat goodé ¡good! GOOD").positive, 1);
        assert_eq!(review_sentiment("").label(), "neutral");
        assert_eq!(review_sentiment("!!! ... ,,,").label(), "neutral");
    }

    #[test]
    fn trim_punctuation_can_leave_nothing() {
        assert_eq!(trim_punctuation(b"..."), b"");
        assert_eq!(trim_punctuation(b"(a.b)"), b"a.b");
        assert_eq!(trim_punctuation(b""), b"");
    }

    #[test]
    fn plain_numbers_follow_the_reference_pattern() {
        for (text, value) in [
            ("1", 1.0),
            ("-2.5", -2.5),
            ("+.5", 0.5),
            ("3.", 3.0),
            ("1e3", 1000.0),
            ("1.5E-2", 0.015),
            ("-0", -0.0),
        ] {
            assert_eq!(plain_number(text), Some(value), "{text}");
        }
        for text in [
            "", ".", "-", "e3", "1e", "1e+", "1_000", "inf", "nan", "0x1", "1 2", "١",
        ] {
            assert_eq!(plain_number(text), None, "{text}");
        }
        assert_eq!(plain_number("1e999"), Some(f64::INFINITY));
    }

    #[test]
    fn csv_records_read_like_python_csv_reader() {
        let text = "a,\"b,c\",\"say \"\"hi\"\"\"\r\n\r\nx,\"multi\nline\",\"q\"tail\rlast";
        let expected: Vec<Vec<&str>> = vec![
            vec!["a", "b,c", "say \"hi\""],
            vec![],
            vec!["x", "multi\nline", "qtail"],
            vec!["last"],
        ];
        assert_eq!(records(text), expected);
    }

    #[test]
    fn csv_records_keep_empty_fields_and_an_unclosed_quote() {
        let expected: Vec<Vec<&str>> = vec![vec!["", "", ""], vec!["a", "open\n"]];
        assert_eq!(records(",,\na,\"open\n"), expected);
        assert!(records("").is_empty());
    }

    #[test]
    fn csv_fields_have_pythons_size_limit() {
        let at_limit = "x".repeat(FIELD_LIMIT);
        assert_eq!(records(&at_limit)[0][0].len(), FIELD_LIMIT);
        let over = CsvRecords::new(&format!("{at_limit}x")).next().unwrap();
        assert_eq!(
            over.unwrap_err().0,
            "field larger than field limit (131072)"
        );
    }

    #[test]
    fn csv_column_stats_skip_missing_and_non_numeric_cells() {
        let data = b"name,price,qty\r\nA, 2.5 ,3\nB,,x\nC,1e1,4,extra\nD,-0.5\n";
        let stats = csv_column_stats(data).unwrap();
        let names: Vec<&str> = stats.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["price", "qty"]);
        let price = stats[0].1;
        assert_eq!(
            (price.count, price.sum, price.min, price.max),
            (3, 12.0, -0.5, 10.0)
        );
        assert_eq!(price.mean(), 4.0);
        assert_eq!(stats[1].1.count, 2);
    }

    #[test]
    fn csv_column_stats_merge_repeated_names_and_keep_the_first_zero() {
        let stats = csv_column_stats(b"v,w,v\n0,1,-0\n-0,2,0\n").unwrap();
        assert_eq!(stats.len(), 2);
        let v = stats[0].1;
        assert_eq!(v.count, 4);
        assert!(v.min.is_sign_positive() && v.max.is_sign_positive());
    }

    #[test]
    fn csv_column_stats_of_nothing_and_of_a_header_alone() {
        assert!(csv_column_stats(b"").unwrap().is_empty());
        assert!(csv_column_stats(b"a,b\n").unwrap().is_empty());
        // Both invalid names decode to U+FFFD: one column.
        let replaced = csv_column_stats(b"\xff,\xfe\n1,2").unwrap();
        assert_eq!(replaced.len(), 1);
        assert_eq!(
            (replaced[0].0.as_str(), replaced[0].1.count),
            ("\u{fffd}", 2)
        );
    }
}
