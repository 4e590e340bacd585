//! Key and value codecs: the only place that decides how bytes look on disk.
//!
//! Keys sort the way range scans need: integers are big-endian, and the parts
//! of a composite key are joined by [`SEPARATOR`] (0xFF never occurs in UTF-8,
//! so a string part can never contain it). Keys sharing their leading parts
//! are therefore contiguous and ordered by the next part; across different
//! string parts the order is bytewise with the separator ("a" 0xFF sorts
//! after "ab"), which no scan relies on.
//!
//! Composite keys are tuples of 2, 3 or 4 [`KeyPart`]s (`String` or `u64`):
//! a `u64` part is its 8 big-endian bytes; a `String` part is its UTF-8 bytes,
//! followed by [`SEPARATOR`] unless it is the last part. [`PrefixOf`] builds
//! the scan prefix of a tuple's leading parts. Tables whose keys predate this
//! rule have named key types in [`super::keys`].
//!
//! Values are records: one version byte, then the record as a MessagePack
//! array of its fields in declaration order (field names took about a tenth of
//! an event's bytes). Records written before as maps with field names are
//! still read. Adding a `#[serde(default)]` field **at the end** of a record
//! needs no migration (shorter arrays get the default); a field inserted
//! elsewhere, removed or reordered needs a new version.
//! A record of an older version goes through [`Record::upgrade`]. Records kept
//! as one string ([`TextRecord`]) are stored exactly as a `String` record.

use serde::{de::DeserializeOwned, Serialize};

use super::StorageError;

/// Joins the parts of a composite key.
pub const SEPARATOR: u8 = 0xFF;

/// A type usable as a table key.
pub trait KeyCodec: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, StorageError>;
}

impl KeyCodec for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| StorageError::corrupt("key is not UTF-8"))
    }
}

impl KeyCodec for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let array: [u8; 8] = bytes.try_into().map_err(|_| StorageError::corrupt("u64 key of wrong length"))?;
        Ok(u64::from_be_bytes(array))
    }
}

impl KeyCodec for [u8; 32] {
    fn encode(&self) -> Vec<u8> {
        self.to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        bytes.try_into().map_err(|_| StorageError::corrupt("32-byte key of wrong length"))
    }
}

/// One part of a composite key.
pub trait KeyPart: Sized {
    /// What keys and prefixes are built from (`str` for a `String` part).
    type Borrowed: ?Sized;

    fn borrowed(&self) -> &Self::Borrowed;

    /// Appends `part`: a string part that is not the `last` one is ended by
    /// [`SEPARATOR`].
    fn write_part(part: &Self::Borrowed, last: bool, out: &mut Vec<u8>);

    /// Reads one part from the front of `bytes` and moves past it.
    fn read_part(bytes: &mut &[u8], last: bool) -> Result<Self, StorageError>;
}

impl KeyPart for String {
    type Borrowed = str;

    fn borrowed(&self) -> &str {
        self
    }

    fn write_part(part: &str, last: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(part.as_bytes());
        if !last {
            out.push(SEPARATOR);
        }
    }

    fn read_part(bytes: &mut &[u8], last: bool) -> Result<Self, StorageError> {
        let text = if last {
            std::mem::take(bytes)
        } else {
            let at = bytes
                .iter()
                .position(|b| *b == SEPARATOR)
                .ok_or_else(|| StorageError::corrupt("composite key without separator"))?;
            let (text, rest) = bytes.split_at(at);
            *bytes = &rest[1..];
            text
        };
        String::decode(text)
    }
}

impl KeyPart for u64 {
    type Borrowed = u64;

    fn borrowed(&self) -> &u64 {
        self
    }

    fn write_part(part: &u64, _last: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(&part.to_be_bytes());
    }

    fn read_part(bytes: &mut &[u8], _last: bool) -> Result<Self, StorageError> {
        let (number, rest) =
            bytes.split_first_chunk::<8>().ok_or_else(|| StorageError::corrupt("composite key too short for a u64"))?;
        *bytes = rest;
        Ok(u64::from_be_bytes(*number))
    }
}

/// `KeyCodec` for a tuple of key parts: every part but the last, then the last.
macro_rules! tuple_key {
    ($($part:ident . $index:tt),+ ; $last:ident . $last_index:tt) => {
        impl<$($part: KeyPart,)+ $last: KeyPart> KeyCodec for ($($part,)+ $last) {
            fn encode(&self) -> Vec<u8> {
                let mut key = Vec::new();
                $($part::write_part(self.$index.borrowed(), false, &mut key);)+
                $last::write_part(self.$last_index.borrowed(), true, &mut key);
                key
            }

            fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
                let mut rest = bytes;
                let key = ($($part::read_part(&mut rest, false)?,)+ $last::read_part(&mut rest, true)?);
                if !rest.is_empty() {
                    return Err(StorageError::corrupt("composite key with trailing bytes"));
                }
                Ok(key)
            }
        }
    };
}

tuple_key!(A.0; B.1);
tuple_key!(A.0, B.1; C.2);
tuple_key!(A.0, B.1, C.2; D.3);

/// The scan prefix selecting the composite keys `K` whose leading parts are
/// these (a tuple of references to the first 1, 2 or 3 parts): each part is
/// encoded as in `K`, string parts with their separator, so `("a",)` does not
/// select keys starting with "ab".
pub trait PrefixOf<K> {
    fn prefix(&self) -> Vec<u8>;
}

/// `PrefixOf` the tuple key `($key, …)` for its leading parts `$part.$index, …`.
macro_rules! tuple_prefix {
    (($($key:ident),+) by $($part:ident . $index:tt),+) => {
        impl<'a, $($key: KeyPart),+> PrefixOf<($($key,)+)> for ($(&'a $part::Borrowed,)+) {
            fn prefix(&self) -> Vec<u8> {
                let mut prefix = Vec::new();
                $($part::write_part(self.$index, false, &mut prefix);)+
                prefix
            }
        }
    };
}

tuple_prefix!((A, B) by A.0);
tuple_prefix!((A, B, C) by A.0);
tuple_prefix!((A, B, C) by A.0, B.1);
tuple_prefix!((A, B, C, D) by A.0);
tuple_prefix!((A, B, C, D) by A.0, B.1);
tuple_prefix!((A, B, C, D) by A.0, B.1, C.2);

/// The scan prefix selecting every composite key whose first part is the string `first`.
pub fn prefix_of(first: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(first.len() + 1);
    String::write_part(first, false, &mut prefix);
    prefix
}

/// A stored record: versioned, MessagePack-encoded.
pub trait Record: Serialize + DeserializeOwned {
    /// Bumped whenever a change cannot be expressed by a defaulted field
    /// appended at the end.
    const VERSION: u8;

    /// Reads a record written as an older `version`. The default refuses, which
    /// is right until a record's format first changes.
    fn upgrade(version: u8, _bytes: &[u8]) -> Result<Self, StorageError> {
        Err(StorageError::corrupt(format!("no upgrade from record version {version}")))
    }
}

/// Plain values stored as records (dictionary tables, small `meta` values).
impl Record for String {
    const VERSION: u8 = 1;
}

impl Record for u64 {
    const VERSION: u8 = 1;
}

impl Record for (String, String) {
    const VERSION: u8 = 1;
}

impl Record for Vec<u64> {
    const VERSION: u8 = 1;
}

impl Record for Vec<String> {
    const VERSION: u8 = 1;
}

/// A value kept as one string in a format of earlier versions (fields joined
/// by newlines): the type builds and parses the string, and [`text_record!`]
/// stores it exactly as a `String` record (version 1, a MessagePack string).
pub trait TextRecord: Sized {
    fn to_text(&self) -> String;
    fn from_text(text: &str) -> Result<Self, StorageError>;
}

/// Serde and [`Record`] for a [`TextRecord`] type.
macro_rules! text_record {
    ($type:ty) => {
        impl ::serde::Serialize for $type {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&$crate::storage::codec::TextRecord::to_text(self))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $type {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                <$type as $crate::storage::codec::TextRecord>::from_text(&text).map_err(::serde::de::Error::custom)
            }
        }

        impl $crate::storage::codec::Record for $type {
            const VERSION: u8 = 1;
        }
    };
}
pub(crate) use text_record;

pub fn encode_record<V: Record>(value: &V) -> Result<Vec<u8>, StorageError> {
    let mut bytes = vec![V::VERSION];
    rmp_serde::encode::write(&mut bytes, value).map_err(|e| StorageError::corrupt(format!("encode: {e}")))?;
    Ok(bytes)
}

pub fn decode_record<V: Record>(bytes: &[u8]) -> Result<V, StorageError> {
    let (&version, body) = bytes.split_first().ok_or_else(|| StorageError::corrupt("empty record"))?;
    if version == V::VERSION {
        rmp_serde::from_slice(body).map_err(|e| StorageError::corrupt(format!("decode: {e}")))
    } else if version < V::VERSION {
        V::upgrade(version, body)
    } else {
        Err(StorageError::corrupt(format!("record version {version} is newer than this build knows")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn integer_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [300u64, 2, 70_000, 1].iter().map(KeyCodec::encode).collect();
        keys.sort();
        let decoded: Vec<u64> = keys.iter().map(|k| u64::decode(k).unwrap()).collect();
        assert_eq!(decoded, vec![1, 2, 300, 70_000]);
    }

    #[test]
    fn two_part_keys_keep_the_encodings_of_earlier_versions() {
        assert_eq!((s("alice"), s("DEV")).encode(), b"alice\xFFDEV");
        assert_eq!((s("!r:x"), 258u64).encode(), b"!r:x\xFF\0\0\0\0\0\0\x01\x02");
        assert_eq!((258u64, s("word")).encode(), b"\0\0\0\0\0\0\x01\x02word");
        assert_eq!((1u64, 2u64).encode(), b"\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02");
        assert_eq!((s(""), s("")).encode(), b"\xFF");
    }

    #[test]
    fn composite_keys_round_trip() {
        let pair = (s("alice"), s("DEVICE"));
        assert_eq!(<(String, String)>::decode(&pair.encode()).unwrap(), pair);
        let mixed = (7u64, s("a"), 9u64);
        assert_eq!(<(u64, String, u64)>::decode(&mixed.encode()).unwrap(), mixed);
        let four = (s("alice"), s("DEV"), s("m.type"), s("txn\u{FFFD}1"));
        assert_eq!(four.encode(), b"alice\xFFDEV\xFFm.type\xFFtxn\xEF\xBF\xBD1");
        assert_eq!(<(String, String, String, String)>::decode(&four.encode()).unwrap(), four);
        let empty = (s(""), s(""), s(""));
        assert_eq!(<(String, String, String)>::decode(&empty.encode()).unwrap(), empty);
        let counters = (u64::MAX, s(""), s("last"), 0u64);
        assert_eq!(<(u64, String, String, u64)>::decode(&counters.encode()).unwrap(), counters);
    }

    #[test]
    fn keys_sharing_leading_parts_are_contiguous_and_in_order_of_the_next_part() {
        let keys = [
            (s("b"), 1u64, s("x")),
            (s("a"), 300, s("x")),
            (s("ab"), 0, s("x")),
            (s("a"), 2, s("z")),
            (s("a"), 2, s("y")),
        ];
        let mut encoded: Vec<Vec<u8>> = keys.iter().map(KeyCodec::encode).collect();
        encoded.sort();
        let decoded: Vec<(String, u64, String)> = encoded.iter().map(|k| KeyCodec::decode(k).unwrap()).collect();
        let first_parts: Vec<&str> = decoded.iter().map(|k| k.0.as_str()).collect();
        // A terminated "a" sorts after "ab" (0xFF > b'b'), but stays in one run.
        assert_eq!(first_parts, ["ab", "a", "a", "a", "b"]);
        let of_a: Vec<(u64, &str)> = decoded[1..4].iter().map(|k| (k.1, k.2.as_str())).collect();
        assert_eq!(of_a, [(2, "y"), (2, "z"), (300, "x")], "then by counter, then by the last part");

        let start = (s("a"), 2u64, s("")).encode();
        let end = (s("a"), 300u64, s("")).encode();
        let in_range: Vec<&Vec<u8>> = encoded.iter().filter(|k| **k >= start && **k < end).collect();
        assert_eq!(in_range.len(), 2, "(a, 2, y) and (a, 2, z), not (a, 300, x) nor (ab, 0, x)");
    }

    #[test]
    fn prefixes_select_whole_leading_parts() {
        let key = (s("alice"), s("DEV"), s("m.type"), s("txn"));
        let encoded = key.encode();
        let first: &dyn PrefixOf<(String, String, String, String)> = &("alice",);
        assert!(encoded.starts_with(&first.prefix()));
        assert!(encoded.starts_with(&PrefixOf::<(String, String, String, String)>::prefix(&("alice", "DEV"))));
        let three = PrefixOf::<(String, String, String, String)>::prefix(&("alice", "DEV", "m.type"));
        assert!(encoded.starts_with(&three));
        let shorter = PrefixOf::<(String, String, String, String)>::prefix(&("alice", "DE"));
        assert!(!encoded.starts_with(&shorter), "a part is matched whole");
        assert_eq!(PrefixOf::<(String, u64)>::prefix(&("alice",)), prefix_of("alice"));
        let by_count = PrefixOf::<(String, u64, String)>::prefix(&("r", &5));
        assert!((s("r"), 5u64, s("x")).encode().starts_with(&by_count));
        assert!(!(s("r"), 6u64, s("x")).encode().starts_with(&by_count));
    }

    #[test]
    fn string_and_counter_keys_sort_by_counter_within_a_string() {
        let keys: Vec<Vec<u8>> =
            [(s("$a"), 300u64), (s("$a"), 2), (s("$ab"), 1)].iter().map(KeyCodec::encode).collect();
        assert!(keys[1] < keys[0], "counters are big-endian");
        assert!(keys[0].starts_with(&prefix_of("$a")) && !keys[2].starts_with(&prefix_of("$a")));
        assert_eq!(<(String, u64)>::decode(&keys[0]).unwrap(), (s("$a"), 300));
        assert!(<(String, u64)>::decode(b"short").is_err());
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(u64::decode(&[1, 2, 3]).is_err());
        assert!(String::decode(&[0xC0, 0x00]).is_err());
        assert!(<(String, String)>::decode(b"no-separator").is_err());
        assert!(<(String, String)>::decode(b"a\xFF\xC0").is_err(), "the last part is not UTF-8");
        assert!(<(String, u64)>::decode(b"a\xFF\0\0\0\0\0\0\0").is_err(), "seven bytes for a u64");
        assert!(<(String, u64)>::decode(b"a\xFF\0\0\0\0\0\0\0\x01\x02").is_err(), "trailing bytes");
        assert!(<(u64, u64)>::decode(&[0; 15]).is_err());
        assert!(<(u64, String)>::decode(&[0; 7]).is_err());
        assert!(<(String, String, String)>::decode(b"a\xFFb").is_err(), "a part missing");
        assert!(<(String, String, String, String)>::decode(b"").is_err());
        for length in 0..20 {
            let _ = <(String, u64, String, u64)>::decode(&vec![0xFF; length]);
            let _ = <(u64, String, String)>::decode(&vec![0x41; length]);
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        name: String,
        #[serde(default)]
        added_later: u32,
    }

    impl Record for V2 {
        const VERSION: u8 = 2;
        fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StorageError> {
            assert_eq!(version, 1);
            let name: String = rmp_serde::from_slice(bytes).map_err(|e| StorageError::corrupt(e.to_string()))?;
            Ok(V2 { name, added_later: 0 })
        }
    }

    #[test]
    fn records_round_trip_and_old_versions_upgrade() {
        let record = V2 { name: "x".into(), added_later: 5 };
        assert_eq!(decode_record::<V2>(&encode_record(&record).unwrap()).unwrap(), record);

        let mut old = vec![1u8];
        old.extend(rmp_serde::to_vec(&"legacy").unwrap());
        assert_eq!(decode_record::<V2>(&old).unwrap(), V2 { name: "legacy".into(), added_later: 0 });

        assert!(decode_record::<V2>(&[9, 0x80]).is_err(), "newer versions are refused");

        // Earlier builds wrote maps with field names: still read.
        let mut named = vec![2u8];
        rmp_serde::encode::write_named(&mut named, &record).unwrap();
        assert_eq!(decode_record::<V2>(&named).unwrap(), record);
        // Positional, without the field added at the end later: defaulted.
        let mut shorter = vec![2u8];
        rmp_serde::encode::write(&mut shorter, &("y",)).unwrap();
        assert_eq!(decode_record::<V2>(&shorter).unwrap(), V2 { name: "y".into(), added_later: 0 });
        assert!(encode_record(&record).unwrap().len() < named.len(), "no field names");
        assert!(decode_record::<V2>(&[]).is_err());
        assert!(decode_record::<V2>(&[2, 0xFF, 0xFF]).is_err());
    }

    #[derive(Debug, PartialEq)]
    struct Pair(String, String);

    impl TextRecord for Pair {
        fn to_text(&self) -> String {
            format!("{}|{}", self.0, self.1)
        }

        fn from_text(text: &str) -> Result<Self, StorageError> {
            let (a, b) = text.split_once('|').ok_or_else(|| StorageError::corrupt("no bar"))?;
            Ok(Pair(a.to_owned(), b.to_owned()))
        }
    }

    text_record!(Pair);

    #[test]
    fn text_records_are_stored_as_string_records() {
        let pair = Pair(s("a"), s("b"));
        assert_eq!(encode_record(&pair).unwrap(), encode_record(&s("a|b")).unwrap());
        assert_eq!(decode_record::<Pair>(&encode_record(&s("a|b")).unwrap()).unwrap(), pair);
        assert!(decode_record::<Pair>(&encode_record(&s("no bar")).unwrap()).is_err());
    }
}
