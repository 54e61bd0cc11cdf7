//! Values that cross workers as JSON text.

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that travels as its JSON text. Timely frames messages between processes with
/// bincode, which is not self-describing: types whose serde form skips optional fields
/// (manifest file records) or asks for `deserialize_any` (job keys that take a number or a
/// word) do not survive it. Inside one process messages are not serialised at all, so only a
/// multi-process run would notice; wrapping such values here makes both paths the same.
#[derive(Clone, Debug, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text)
            .map(Json)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileRecord;

    /// A file record with its optional fields absent does not round-trip through bincode
    /// bare, and does inside `Json`.
    #[test]
    fn records_survive_bincode_inside_json() {
        let r = vec![FileRecord {
            path: "recs/part-00000.tsv".into(),
            bytes: 10,
            crc32: 7,
            rows: 2,
            xxh3: None,
            vshards: Vec::new(),
        }];
        let bare = bincode::serialize(&r).unwrap();
        assert!(bincode::deserialize::<Vec<FileRecord>>(&bare).is_err());
        let wrapped = bincode::serialize(&Json(r.clone())).unwrap();
        let back: Json<Vec<FileRecord>> = bincode::deserialize(&wrapped).unwrap();
        assert_eq!(back.0, r);
        let job = crate::job::Job::default();
        let back: Json<crate::job::Job> =
            bincode::deserialize(&bincode::serialize(&Json(job.clone())).unwrap()).unwrap();
        assert_eq!(back.0, job);
    }
}
