//! Words: how the lab splits text into normalised words, and how a misspelt or inflected word
//! of free model output is mapped back to the lexicon (plural and possessive endings, one or
//! two typing errors).

use std::collections::BTreeSet;

/// Split `text` into lower-case words: runs of letters, digits and apostrophes, with curly
/// apostrophes straightened, apostrophes at the ends dropped, and a possessive `'s` removed
/// ("Neighbour's" → "neighbour"; "can't" stays "can't").
///
/// ```
/// assert_eq!(cai_lab::words::words("Ask your Neighbour’s key!"), ["ask", "your", "neighbour", "key"]);
/// ```
pub fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace(['\u{2019}', '\u{2018}'], "'");
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .map(|w| w.strip_suffix("'s").unwrap_or(w))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Words of a template, without its `{placeholder}`s.
pub(crate) fn template_words(template: &str) -> Vec<String> {
    let mut plain = String::with_capacity(template.len());
    let mut in_placeholder = false;
    for c in template.chars() {
        match c {
            '{' => in_placeholder = true,
            '}' => {
                in_placeholder = false;
                plain.push(' ');
            }
            _ if !in_placeholder => plain.push(c),
            _ => {}
        }
    }
    words(&plain)
}

/// The optimal-string-alignment distance (edits: insert, delete, substitute, swap two
/// neighbours), or `None` once it exceeds `limit`.
pub fn edit_distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let width = b.len() + 1;
    let mut rows = vec![vec![0usize; width]; a.len() + 1];
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        rows[i][0] = i;
        let mut row_min = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
            row_min = row_min.min(d);
        }
        if row_min > limit {
            return None;
        }
    }
    let d = rows[a.len()][b.len()];
    (d <= limit).then_some(d)
}

/// A set of known words and the rule that maps any word onto it.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    words: BTreeSet<String>,
}

impl Vocabulary {
    /// A vocabulary of the given words.
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        Self {
            words: words.into_iter().collect(),
        }
    }

    /// Whether `word` is known as it is.
    pub fn contains(&self, word: &str) -> bool {
        self.words.contains(word)
    }

    /// The known words, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.words.iter().map(String::as_str)
    }

    /// How many words are known.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether no word is known.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The known word `word` stands for: itself; its stem without a plural `s`/`es`; for
    /// words of 5+ letters, the one known word within one edit (two from 8 letters); for
    /// 4-letter words, the one known word two swapped letters away. `None` when nothing
    /// matches or two known words match equally well.
    pub fn canonical<'a>(&'a self, word: &'a str) -> Option<&'a str> {
        if let Some(known) = self.words.get(word) {
            return Some(known);
        }
        for suffix in ["s", "es"] {
            if let Some(stem) = word.strip_suffix(suffix) {
                if let Some(known) = self.words.get(stem) {
                    return Some(known);
                }
            }
        }
        let len = word.chars().count();
        if len == 4 {
            return self.swapped(word);
        }
        let limit = match len {
            0..=3 => return None,
            5..=7 => 1,
            _ => 2,
        };
        let mut best: Option<(usize, &str)> = None;
        let mut tied = false;
        for known in &self.words {
            let Some(d) = edit_distance(word, known, limit) else {
                continue;
            };
            match best {
                Some((b, _)) if d > b => {}
                Some((b, _)) if d == b => tied = true,
                _ => {
                    best = Some((d, known));
                    tied = false;
                }
            }
        }
        match best {
            Some((_, known)) if !tied => Some(known),
            _ => None,
        }
    }

    /// The one known word that `word` becomes by swapping two neighbouring letters (for
    /// short words, where any other edit is too likely to hit another word).
    fn swapped(&self, word: &str) -> Option<&str> {
        let chars: Vec<char> = word.chars().collect();
        let mut found = None;
        for i in 0..chars.len().saturating_sub(1) {
            let mut swapped = chars.clone();
            swapped.swap(i, i + 1);
            let candidate: String = swapped.into_iter().collect();
            if let Some(known) = self.words.get(&candidate) {
                if found.is_some_and(|f: &String| f != known) {
                    return None;
                }
                found = Some(known);
            }
        }
        found.map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_normalise_case_apostrophes_and_possessives() {
        assert_eq!(
            words("I can't help: it's my SISTER’s bike, 2 times."),
            ["i", "can't", "help", "it", "my", "sister", "bike", "2", "times"]
        );
        assert_eq!(words("  ''  "), Vec::<String>::new());
    }

    #[test]
    fn template_words_drop_placeholders() {
        assert_eq!(
            template_words("ask {owner} for a key, or call {them}"),
            ["ask", "for", "a", "key", "or", "call"]
        );
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("theft", "theft", 2), Some(0));
        assert_eq!(edit_distance("thfet", "theft", 2), Some(1));
        assert_eq!(edit_distance("thef", "theft", 2), Some(1));
        assert_eq!(edit_distance("crowbar", "crowbra", 1), Some(1));
        assert_eq!(edit_distance("kitten", "sitting", 3), Some(3));
        assert_eq!(edit_distance("kitten", "sitting", 2), None);
        assert_eq!(edit_distance("a", "abcd", 2), None);
    }

    #[test]
    fn canonical_maps_inflections_and_typos_to_known_words() {
        let vocab = Vocabulary::new(
            [
                "crowbar",
                "locksmith",
                "theft",
                "watch",
                "key",
                "lock",
                "look",
            ]
            .map(String::from),
        );
        assert_eq!(vocab.canonical("theft"), Some("theft"));
        assert_eq!(vocab.canonical("keys"), Some("key"));
        assert_eq!(vocab.canonical("watches"), Some("watch"));
        assert_eq!(vocab.canonical("crowbra"), Some("crowbar"));
        assert_eq!(vocab.canonical("lcoksmiht"), Some("locksmith"));
        // Short words only forgive a swap: "lokk" could be "lock" or "look".
        assert_eq!(vocab.canonical("lokk"), None);
        assert_eq!(vocab.canonical("lcok"), Some("lock"));
        assert_eq!(vocab.canonical("zebra"), None);
    }

    #[test]
    fn canonical_refuses_ties() {
        let vocab = Vocabulary::new(["abcde", "abcdf"].map(String::from));
        assert_eq!(vocab.canonical("abcdx"), None);
    }
}
