//! Embedding vectors travel as base64 of little-endian f32 (DESIGN §2): a third of JSON's size and
//! bit-exact.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vector(pub Vec<f32>);

impl Vector {
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for value in &self.0 {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        STANDARD.encode(bytes)
    }

    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|error| format!("vector is not base64: {error}"))?;
        if bytes.len() % 4 != 0 {
            return Err(format!(
                "vector has {} bytes, not a multiple of 4",
                bytes.len()
            ));
        }
        Ok(Self(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    }

    pub fn dimension(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for Vector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        Self::from_base64(&encoded).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bit_exact() {
        let vector = Vector(vec![0.0, -1.5, f32::MIN_POSITIVE, 3.402_823_5e38, 1e-7]);
        let json = serde_json::to_string(&vector).expect("serialize");
        let back: Vector = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(vector, back);
        // little-endian 1.0f32 is 00 00 80 3f
        assert_eq!(Vector(vec![1.0]).to_base64(), "AACAPw==");
    }

    #[test]
    fn rejects_truncated_vectors() {
        assert!(Vector::from_base64("AACA").is_err());
        assert!(Vector::from_base64("not base64!").is_err());
    }
}
