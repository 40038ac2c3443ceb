//! The portal key an admin pastes: grouped, case-insensitive, with a check
//! character so that a typo is caught before any network call.
//!
//! Format: 25 symbols of Crockford's base32 alphabet (digits and letters
//! without I, L, O and U), shown as five groups of five. The first 24 symbols
//! are random (120 bits); the 25th is a check symbol computed as a weighted
//! sum modulo 37 over Crockford's alphabet extended with its five check
//! symbols `*~$=U` (see [`check_value`]). Because 37 is prime and every
//! weight and every symbol difference is smaller than 37, the check catches
//! every single-symbol substitution and every swap of two neighbours.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Crockford's base32 symbols, in value order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Crockford's five extra symbols, used only in the check position (values 32..=36).
const CHECK_EXTRA: &[u8; 5] = b"*~$=U";
/// Random symbols in a key.
const DATA_LEN: usize = 24;
/// Symbols in a key, check symbol included.
pub const KEY_LEN: usize = DATA_LEN + 1;
/// Symbols per group when shown to people.
const GROUP: usize = 5;

/// A portal key in canonical form (upper case, no separators).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PortalKey(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the PBX key is empty")]
    Empty,
    #[error("the PBX key contains {} at position {position}, which no PBX key has (keys use digits and letters, and one of * ~ $ = only as the last character); copy it again from the portal", shown(*.ch))]
    BadCharacter {
        ch: char,
        /// 1-based, counted in the text as pasted (separators included).
        position: usize,
    },
    #[error("the PBX key has {found} characters but needs {expected} (5 groups of 5); check that it was copied whole")]
    WrongLength { found: usize, expected: usize },
    #[error("the PBX key has a typo: its check character does not match (compare it with the portal; no request was sent)")]
    CheckFailed,
    #[error("the system random generator failed, so no key can be issued")]
    RandomUnavailable,
}

/// How a refused character is named: visible ones quoted, invisible or
/// look-alike ones (a non-breaking space from a PDF) by their code point, so
/// that the message never shows what looks like an ordinary space.
fn shown(ch: char) -> String {
    if ch.is_ascii_graphic() {
        format!("'{ch}'")
    } else if ch.is_alphanumeric() {
        format!("'{ch}' (U+{:04X})", ch as u32)
    } else {
        format!("the invisible or look-alike character U+{:04X}", ch as u32)
    }
}

/// Separators between the symbols of a pasted key: white space of any kind
/// (PDFs and mail turn spaces into non-breaking ones, add zero-width ones)
/// and dashes of any kind (word processors turn `-` into an en dash).
fn is_separator(ch: char) -> bool {
    ch.is_whitespace()
        || matches!(
            ch,
            '-' | '\u{2010}'..='\u{2015}' // hyphen, non-breaking hyphen, figure dash, en, em, bar
                | '\u{2212}' // minus sign
                | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' // small and full-width dashes
                | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' // zero-width characters
                | '\u{00AD}' // soft hyphen
        )
}

/// Value of a symbol in the extended (37-symbol) set, after Crockford's
/// read-alike mapping: O reads as 0, I and L read as 1. Lower case is
/// upper-cased first.
fn symbol_value(ch: char) -> Option<u8> {
    let up = match ch.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    if !up.is_ascii() {
        return None;
    }
    let b = up as u8;
    if let Some(v) = ALPHABET.iter().position(|&a| a == b) {
        return Some(v as u8);
    }
    CHECK_EXTRA
        .iter()
        .position(|&a| a == b)
        .map(|v| (32 + v) as u8)
}

fn symbol(value: u8) -> char {
    if (value as usize) < ALPHABET.len() {
        ALPHABET[value as usize] as char
    } else {
        CHECK_EXTRA[value as usize - ALPHABET.len()] as char
    }
}

/// The check value of the 24 data symbols: `sum((i + 1) * value_i) mod 37`.
///
/// Why it catches what it must: a substitution at position i changes the sum
/// by `(i + 1) * d` with `1 <= i + 1 <= 24` and `0 < |d| <= 31`; a swap of
/// neighbours i, i+1 changes it by `(a - b) * ((i + 1) - (i + 2)) = b - a`.
/// Neither is a multiple of the prime 37. A substitution of the check symbol
/// itself changes the expected symbol directly; swapping the last data symbol
/// with the check symbol would need `25 * c = 25 * v (mod 37)`, i.e. `c = v`.
fn check_value(data: &[u8]) -> u8 {
    let sum: u32 = data
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32 + 1) * u32::from(v))
        .sum();
    (sum % 37) as u8
}

fn from_values(data: &[u8]) -> PortalKey {
    let mut s: String = data.iter().map(|&v| symbol(v)).collect();
    s.push(symbol(check_value(data)));
    PortalKey(s)
}

impl PortalKey {
    /// A new random key (the portal issues these).
    ///
    /// # Panics
    /// When the operating system's random generator fails; use
    /// [`PortalKey::try_generate`] to handle that.
    pub fn generate() -> PortalKey {
        match PortalKey::try_generate() {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    /// A new random key, or an error if the system random generator fails.
    pub fn try_generate() -> Result<PortalKey, KeyError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; DATA_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::RandomUnavailable)?;
        // 256 is a multiple of 32, so masking keeps every symbol equally likely.
        let data: Vec<u8> = bytes.iter().map(|b| b & 31).collect();
        Ok(from_values(&data))
    }

    /// Reads a key as pasted: any case, spaces, dashes and line breaks allowed.
    pub fn parse(input: &str) -> Result<PortalKey, KeyError> {
        // (value, 1-based position in the input) of every non-separator char.
        let mut symbols: Vec<(u8, usize)> = Vec::with_capacity(KEY_LEN);
        for (i, ch) in input.chars().enumerate() {
            if is_separator(ch) {
                continue;
            }
            match symbol_value(ch) {
                Some(v) => symbols.push((v, i + 1)),
                None => {
                    return Err(KeyError::BadCharacter {
                        ch,
                        position: i + 1,
                    })
                }
            }
        }
        if symbols.is_empty() {
            return Err(KeyError::Empty);
        }
        if symbols.len() != KEY_LEN {
            return Err(KeyError::WrongLength {
                found: symbols.len(),
                expected: KEY_LEN,
            });
        }
        // The extra symbols (*~$=U) are legal only in the check position.
        if let Some(&(_, position)) = symbols[..DATA_LEN].iter().find(|(v, _)| *v >= 32) {
            let ch = input.chars().nth(position - 1).unwrap_or('?');
            return Err(KeyError::BadCharacter { ch, position });
        }
        let data: Vec<u8> = symbols[..DATA_LEN].iter().map(|(v, _)| *v).collect();
        if check_value(&data) != symbols[DATA_LEN].0 {
            return Err(KeyError::CheckFailed);
        }
        Ok(from_values(&data))
    }

    /// Canonical, without separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Only the last group, for logs and output. The hidden groups are
    /// `#`, which no key has: a key may end in `*`, so `*` would blur where
    /// the hiding ends.
    pub fn redacted(&self) -> String {
        let hidden = "#".repeat(GROUP);
        let last = &self.0[self.0.len() - GROUP..];
        format!("{hidden}-{hidden}-{hidden}-{hidden}-{last}")
    }
}

impl fmt::Display for PortalKey {
    /// Grouped for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The canonical form is ASCII, so byte chunks are char chunks.
        for (i, chunk) in self.0.as_bytes().chunks(GROUP).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for PortalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortalKey({})", self.redacted())
    }
}

impl Serialize for PortalKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PortalKey {
    /// Validates like [`PortalKey::parse`]: a stored or sent key with a typo
    /// is refused, not carried along.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortalKey, D::Error> {
        let s = String::deserialize(d)?;
        PortalKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed key, so that failures are reproducible.
    fn sample() -> PortalKey {
        let data: Vec<u8> = (0..DATA_LEN as u8).map(|i| (i * 7 + 3) % 32).collect();
        from_values(&data)
    }

    #[test]
    fn keys_pasted_from_pdfs_and_mail_parse() {
        let k = PortalKey::parse("7A3KD-0QPX4-M9VRT-2HBNE-C6WZA").unwrap();
        for pasted in [
            "7A3KD\u{00A0}0QPX4\u{00A0}M9VRT\u{00A0}2HBNE\u{00A0}C6WZA",
            "7A3KD\u{2013}0QPX4\u{2013}M9VRT\u{2014}2HBNE\u{2212}C6WZA",
            "\u{FEFF}7a3kd-0qpx4-\u{200B}m9vrt-2hbne-c6wza\u{202F}",
            "7A3KD\u{2011}0QPX4\u{00AD}M9VRT 2HBNE\tC6WZA\r\n",
        ] {
            assert_eq!(PortalKey::parse(pasted), Ok(k.clone()), "{pasted:?}");
        }
    }

    #[test]
    fn refused_characters_are_named_so_people_can_see_them() {
        let e = PortalKey::parse("7A3KD-0QPX4-M9VRT-2HBNE-C6W\u{00B7}A").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("U+00B7"), "{msg}");
        assert!(msg.contains("* ~ $ ="), "{msg}");
        let e = PortalKey::parse("7A3KD-0QPX4-M9VRT-2HBNE-C6W#A").unwrap_err();
        assert!(e.to_string().contains("'#' at position 28"), "{e}");
    }

    #[test]
    fn a_key_ending_in_a_check_extra_is_redacted_without_ambiguity() {
        // Find a key whose check symbol is '*' (value 32).
        let mut data: Vec<u8> = vec![0; DATA_LEN];
        while check_value(&data) != 32 {
            data[0] += 1;
        }
        let k = from_values(&data);
        assert!(k.as_str().ends_with('*'));
        let r = k.redacted();
        assert!(r.starts_with("#####-"), "{r}");
        assert_eq!(r.matches('*').count(), 1, "{r}");
    }

    #[test]
    fn known_answer_from_the_docs() {
        // Pins the check rule: docs/license-format.md shows this key.
        let k = PortalKey::parse("7A3KD-0QPX4-M9VRT-2HBNE-C6WZA").unwrap();
        assert_eq!(k.as_str(), "7A3KD0QPX4M9VRT2HBNEC6WZA");
        assert_eq!(k.redacted(), "#####-#####-#####-#####-C6WZA");
        assert_eq!(
            PortalKey::parse("7A3KD-0QPX4-M9VRT-2HBNE-C6WZB"),
            Err(KeyError::CheckFailed)
        );
    }

    #[test]
    fn generated_keys_parse_back_and_differ() {
        let a = PortalKey::generate();
        let b = PortalKey::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), KEY_LEN);
        assert_eq!(PortalKey::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(PortalKey::parse(&a.to_string()), Ok(a));
    }

    #[test]
    fn display_groups_and_redacted_shows_last_group() {
        let k = sample();
        let shown = k.to_string();
        assert_eq!(shown.len(), 29);
        let groups: Vec<&str> = shown.split('-').collect();
        assert_eq!(groups.len(), 5);
        assert!(groups.iter().all(|g| g.len() == 5));
        assert_eq!(groups.concat(), k.as_str());
        assert_eq!(
            k.redacted(),
            format!("#####-#####-#####-#####-{}", groups[4])
        );
        assert!(format!("{k:?}").contains("#####-#####"));
        assert!(!format!("{k:?}").contains(groups[0]));
    }

    #[test]
    fn parse_tolerates_case_separators_and_line_breaks() {
        let k = sample();
        let shown = k.to_string();
        let messy = format!(
            "  {}\r\n\t{} - {}\n",
            shown[..12].to_lowercase(),
            &shown[12..20],
            &shown[20..]
        );
        assert_eq!(PortalKey::parse(&messy), Ok(k));
    }

    #[test]
    fn parse_maps_read_alike_letters() {
        // A key made of 0s and 1s, typed with O, I and L.
        let data: Vec<u8> = (0..DATA_LEN).map(|i| (i % 2) as u8).collect();
        let k = from_values(&data);
        let typed: String = k
            .as_str()
            .chars()
            .enumerate()
            .map(|(i, c)| match (i, c) {
                (i, '0') if i < DATA_LEN => 'o',
                (i, '1') if i < DATA_LEN && i % 4 == 1 => 'I',
                (i, '1') if i < DATA_LEN => 'l',
                (_, c) => c,
            })
            .collect();
        assert_ne!(typed, k.as_str());
        assert_eq!(PortalKey::parse(&typed), Ok(k));
    }

    #[test]
    fn parse_reports_empty_length_and_bad_character() {
        assert_eq!(PortalKey::parse(" - \n"), Err(KeyError::Empty));
        let k = sample().to_string();
        assert_eq!(
            PortalKey::parse(&k[..28]),
            Err(KeyError::WrongLength {
                found: 24,
                expected: 25
            })
        );
        assert_eq!(
            PortalKey::parse(&format!("{k}A")),
            Err(KeyError::WrongLength {
                found: 26,
                expected: 25
            })
        );
        // Position counts the pasted text, dashes included.
        let bad = format!("{}!{}", &k[..7], &k[8..]);
        assert_eq!(
            PortalKey::parse(&bad),
            Err(KeyError::BadCharacter {
                ch: '!',
                position: 8
            })
        );
        // A check-only symbol in a data position is a bad character.
        let u = format!("U{}", &k[1..]);
        assert_eq!(
            PortalKey::parse(&u),
            Err(KeyError::BadCharacter {
                ch: 'U',
                position: 1
            })
        );
    }

    #[test]
    fn check_symbol_may_be_an_extended_symbol() {
        // Weight 2 times 16 is 32: the first extended symbol, '*'.
        let mut data = vec![0u8; DATA_LEN];
        data[1] = 16;
        assert_eq!(check_value(&data), 32);
        let k = from_values(&data);
        assert!(k.as_str().ends_with('*'));
        assert_eq!(PortalKey::parse(&k.to_string().to_lowercase()), Ok(k));
    }

    #[test]
    fn every_single_substitution_is_caught() {
        let k = sample();
        let chars: Vec<char> = k.as_str().chars().collect();
        let all: Vec<char> = ALPHABET
            .iter()
            .chain(CHECK_EXTRA.iter())
            .map(|&b| b as char)
            .collect();
        let mut tried = 0;
        for pos in 0..KEY_LEN {
            for &c in &all {
                if c == chars[pos] {
                    continue;
                }
                let mut typo = chars.clone();
                typo[pos] = c;
                let typo: String = typo.into_iter().collect();
                let got = PortalKey::parse(&typo);
                assert!(got.is_err(), "{typo} was accepted");
                tried += 1;
            }
        }
        assert_eq!(tried, KEY_LEN * 36);
    }

    #[test]
    fn every_adjacent_transposition_is_caught() {
        // A sample whose neighbours all differ, so every swap is a real change.
        let k = sample();
        let chars: Vec<char> = k.as_str().chars().collect();
        for pos in 0..KEY_LEN - 1 {
            assert_ne!(chars[pos], chars[pos + 1]);
            let mut typo = chars.clone();
            typo.swap(pos, pos + 1);
            let typo: String = typo.into_iter().collect();
            assert!(PortalKey::parse(&typo).is_err(), "{typo} was accepted");
        }
        // In the data part the miss is reported as a typo, not as noise.
        let mut typo = chars.clone();
        typo.swap(3, 4);
        let typo: String = typo.into_iter().collect();
        assert_eq!(PortalKey::parse(&typo), Err(KeyError::CheckFailed));
    }

    #[test]
    fn serde_uses_the_canonical_string_and_validates() {
        let k = sample();
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", k.as_str()));
        let back: PortalKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, k);
        let grouped: PortalKey = serde_json::from_str(&format!("\"{k}\"")).unwrap();
        assert_eq!(grouped, k);
        let mut typo: Vec<char> = k.as_str().chars().collect();
        typo.swap(0, 1);
        let typo: String = typo.into_iter().collect();
        let err = serde_json::from_str::<PortalKey>(&format!("\"{typo}\"")).unwrap_err();
        assert!(err.to_string().contains("check character"), "{err}");
    }
}
