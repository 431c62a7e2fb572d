//! Source positions and diagnostics: the error currency of parsing and
//! validation. Every problem found in a pipeline file becomes a [`Diagnostic`]
//! that names the file, the 1-based line and column, and (when it belongs to
//! one) the step; [`Diagnostics`] collects them so a user sees every problem at
//! once instead of fixing them one run at a time.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::shorten;

/// A 1-based line and column in the pipeline source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Position {
    /// A position from 1-based line and column.
    pub const fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a pipeline file.
///
/// Displays as `file:line:column: step 'name': message` (the step part is left
/// out for problems that belong to no step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file (or other origin) the pipeline came from, as given to the parser.
    pub file: String,
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub column: usize,
    /// The step (or group) the problem belongs to, if any.
    pub step: Option<String>,
    /// What is wrong, and where useful, how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// Caller text (a step name, a message quoting the source) is cut to a
    /// readable length, so a hostile file cannot make its errors huge.
    pub(crate) fn new(file: &str, pos: Position, step: Option<&str>, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            file: shorten(file, 200).into_owned(),
            line: pos.line,
            column: pos.column,
            step: step.map(|s| shorten(s, 128).into_owned()),
            message: match shorten(&message, 1000) {
                std::borrow::Cow::Borrowed(_) => message,
                cut => cut.into_owned(),
            },
        }
    }

    /// Where the problem is.
    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(step) = &self.step {
            write!(f, "step '{step}': ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Most diagnostics reported for one file: enough to fix a real file in one
/// pass, few enough that a hostile one gets a short answer.
pub const MAX_DIAGNOSTICS: usize = 100;

/// All the problems found in one pipeline file, in source order.
///
/// Displays one diagnostic per line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The diagnostics, in source order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The diagnostics as a vector.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.0
    }

    /// In source order, without duplicates, and at most [`MAX_DIAGNOSTICS`]
    /// (then one more that says how many were left out).
    pub(crate) fn sorted(mut v: Vec<Diagnostic>) -> Self {
        v.sort_by_key(|d| (d.line, d.column));
        v.dedup();
        if v.len() > MAX_DIAGNOSTICS {
            let left_out = v.len() - MAX_DIAGNOSTICS;
            v.truncate(MAX_DIAGNOSTICS);
            let last = &v[MAX_DIAGNOSTICS - 1];
            let more = Diagnostic {
                file: last.file.clone(),
                line: last.line,
                column: last.column,
                step: None,
                message: format!("{left_out} more problem(s) not shown (at most {MAX_DIAGNOSTICS} are reported)"),
            };
            v.push(more);
        }
        Self(v)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible typo (at most a third of the word's length, at least 1).
pub(crate) fn closest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    // Edit distance is quadratic: a typo suggestion for a long word (only
    // a hostile caller writes one) is not worth its cost.
    const MAX_WORD: usize = 64;
    if word.len() > MAX_WORD {
        return None;
    }
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word && c.len() <= MAX_WORD)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// ", did you mean 'x'?" or nothing.
pub(crate) fn did_you_mean(suggestion: Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean '{s}'?)"),
        None => String::new(),
    }
}

/// Levenshtein distance, counting an adjacent transposition as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestions() {
        assert_eq!(edit_distance("input_form", "input_from"), 1);
        assert_eq!(edit_distance("upscal", "upscale"), 1);
        assert_eq!(closest("upscal", ["upscale", "generate"]), Some("upscale".into()));
        assert_eq!(closest("zzzzzz", ["upscale", "generate"]), None);
    }
}
