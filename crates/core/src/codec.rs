//! The one encoding keynode uses for stored values and wire messages.
//!
//! bincode 2 (serde mode, standard configuration: little endian, varint integers).
//! Every decode takes a byte limit so a hostile length prefix can never make us
//! allocate more than the caller allows. Changing the format means changing this
//! file only.

use bincode::config::{self, Configuration};
use serde::{Serialize, de::DeserializeOwned};

/// Default limit for a decoded value: 16 MiB.
pub const DEFAULT_LIMIT: usize = 16 * 1024 * 1024;

/// Encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode value: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed data: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// Bytes were left over after the value.
    #[error("malformed data: {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> Configuration {
    config::standard()
}

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a `T` from all of `bytes`, refusing inputs that claim more than
/// [`DEFAULT_LIMIT`] bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_with_limit::<T, DEFAULT_LIMIT>(bytes)
}

/// Decodes a `T` from all of `bytes` with an explicit allocation limit `N`.
pub fn decode_with_limit<T: DeserializeOwned, const N: usize>(
    bytes: &[u8],
) -> Result<T, CodecError> {
    let cfg = config().with_limit::<N>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, cfg)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let v = (7u32, String::from("x"), vec![1u8, 2, 3]);
        let mut bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&bytes).unwrap(), v);
        bytes.push(0);
        assert!(matches!(
            decode::<(u32, String, Vec<u8>)>(&bytes),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A Vec<u8> whose varint length claims u64::MAX bytes.
        let bytes = [253u8, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        assert!(decode_with_limit::<Vec<u8>, 16>(&[20u8; 21]).is_err());
    }
}
