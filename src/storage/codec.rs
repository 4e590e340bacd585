//! Key and value codecs: the only place that decides how bytes look on disk.
//!
//! Keys sort the way range scans need: integers are big-endian, and the parts
//! of a composite key are joined by [`SEPARATOR`] (0xFF never occurs in UTF-8,
//! so a string part can never contain it, and "a" sorts before "ab").
//!
//! Values are records: one version byte, then the record as a MessagePack map
//! with field names (so adding a `#[serde(default)]` field needs no migration).
//! A record of an older version goes through [`Record::upgrade`].

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

impl KeyCodec for (String, String) {
    fn encode(&self) -> Vec<u8> {
        let mut key = prefix_of(&self.0);
        key.extend_from_slice(self.1.as_bytes());
        key
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let at = bytes
            .iter()
            .position(|b| *b == SEPARATOR)
            .ok_or_else(|| StorageError::corrupt("composite key without separator"))?;
        Ok((String::decode(&bytes[..at])?, String::decode(&bytes[at + 1..])?))
    }
}

impl KeyCodec for (u64, u64) {
    fn encode(&self) -> Vec<u8> {
        let mut key = self.0.to_be_bytes().to_vec();
        key.extend_from_slice(&self.1.to_be_bytes());
        key
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        if bytes.len() != 16 {
            return Err(StorageError::corrupt("(u64, u64) key of wrong length"));
        }
        Ok((u64::decode(&bytes[..8])?, u64::decode(&bytes[8..])?))
    }
}

impl KeyCodec for (u64, String) {
    fn encode(&self) -> Vec<u8> {
        let mut key = self.0.to_be_bytes().to_vec();
        key.extend_from_slice(self.1.as_bytes());
        key
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        if bytes.len() < 8 {
            return Err(StorageError::corrupt("(u64, string) key too short"));
        }
        Ok((u64::decode(&bytes[..8])?, String::decode(&bytes[8..])?))
    }
}

impl KeyCodec for (String, u64) {
    fn encode(&self) -> Vec<u8> {
        let mut key = prefix_of(&self.0);
        key.extend_from_slice(&self.1.to_be_bytes());
        key
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        if bytes.len() < 9 || bytes[bytes.len() - 9] != SEPARATOR {
            return Err(StorageError::corrupt("(string, u64) key of wrong shape"));
        }
        let split = bytes.len() - 9;
        Ok((String::decode(&bytes[..split])?, u64::decode(&bytes[split + 1..])?))
    }
}

/// The scan prefix selecting every composite key whose first part is `first`.
pub fn prefix_of(first: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(first.len() + 1);
    prefix.extend_from_slice(first.as_bytes());
    prefix.push(SEPARATOR);
    prefix
}

/// A stored record: versioned, MessagePack-encoded.
pub trait Record: Serialize + DeserializeOwned {
    /// Bumped whenever a change cannot be expressed by a defaulted field.
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

pub fn encode_record<V: Record>(value: &V) -> Result<Vec<u8>, StorageError> {
    let mut bytes = vec![V::VERSION];
    rmp_serde::encode::write_named(&mut bytes, value).map_err(|e| StorageError::corrupt(format!("encode: {e}")))?;
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

    #[test]
    fn integer_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [300u64, 2, 70_000, 1].iter().map(KeyCodec::encode).collect();
        keys.sort();
        let decoded: Vec<u64> = keys.iter().map(|k| u64::decode(k).unwrap()).collect();
        assert_eq!(decoded, vec![1, 2, 300, 70_000]);
    }

    #[test]
    fn composite_keys_round_trip_and_group_by_prefix() {
        let key = ("alice".to_owned(), "DEVICE".to_owned());
        assert_eq!(<(String, String)>::decode(&key.encode()).unwrap(), key);
        let longer = ("alicea".to_owned(), "X".to_owned()).encode();
        assert!(key.encode().starts_with(&prefix_of("alice")));
        assert!(!longer.starts_with(&prefix_of("alice")), "a longer first part must not match the prefix");
    }

    #[test]
    fn string_and_counter_keys_sort_by_counter_within_a_string() {
        let keys: Vec<Vec<u8>> = [("$a".to_owned(), 300u64), ("$a".to_owned(), 2), ("$ab".to_owned(), 1)]
            .iter()
            .map(KeyCodec::encode)
            .collect();
        assert!(keys[1] < keys[0], "counters are big-endian");
        assert!(keys[0].starts_with(&prefix_of("$a")) && !keys[2].starts_with(&prefix_of("$a")));
        assert_eq!(<(String, u64)>::decode(&keys[0]).unwrap(), ("$a".to_owned(), 300));
        assert!(<(String, u64)>::decode(b"short").is_err());
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(u64::decode(&[1, 2, 3]).is_err());
        assert!(<(String, String)>::decode(b"no-separator").is_err());
        assert!(String::decode(&[0xC0, 0x00]).is_err());
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
        assert!(decode_record::<V2>(&[]).is_err());
        assert!(decode_record::<V2>(&[2, 0xFF, 0xFF]).is_err());
    }
}
