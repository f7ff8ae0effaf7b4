//! JSON from a less trusted party, parsed strictly: an object that names a key twice is refused,
//! at any depth. serde_json keeps the last value of a repeated key, so
//! `{"v":1,"cmd":"status","cmd":"stop"}` would read as a stop to recluster while a proxy or a log
//! that keeps the first one sees a status: one text, two meanings. Everyone who reads JSON that
//! someone else wrote (control requests, workers' messages, what `ctl` reads from a server) goes
//! through `from_slice`.
//!
//! Bounded as serde_json is: nesting deeper than its limit (128) is an error before the stack
//! grows, and memory grows only with the input, which every caller has already bounded.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON value, refusing an object with a repeated key.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unique>(bytes).map(|unique| unique.0)
}

/// Parses `text` as `from_slice` does.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    from_slice(text.as_bytes())
}

/// A value whose objects have distinct keys.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unique, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Unique::deserialize(deserializer).map(|unique| unique.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {} appears twice in one object",
                    shown(&key)
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A key as an error names it: quoted, escaped, at most 40 characters.
fn shown(key: &str) -> String {
    let mut short: String = key.chars().take(40).collect();
    if short.len() < key.len() {
        short.push('…');
    }
    Value::String(short).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_values_as_serde_json_when_keys_are_distinct() {
        let texts = [
            r#"{"v":1,"cmd":"status","ids":[1,"web.2",-3,1.5e3,null,true],"data":{"a":{"b":[]}}}"#,
            "[]",
            "\"x\\u001b\"",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
        ];
        for text in texts {
            assert_eq!(
                from_str(text).unwrap(),
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        let error = from_str(r#"{"v":1,"cmd":"status","cmd":"stop"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"cmd\" appears twice"), "{error}");
        assert!(from_str(r#"{"data":{"x":1,"x":1}}"#).is_err());
        assert!(from_str(r#"[1,{"a":[{"k":0,"k":0}]}]"#).is_err());
        // The same key in two objects is no repetition; escaped and raw spellings are one key.
        assert!(from_str(r#"[{"k":1},{"k":2}]"#).is_ok());
        assert!(from_str(r#"{"cmd":1,"c\u006dd":2}"#).is_err());
        let long = format!(r#"{{"{0}":1,"{0}":2}}"#, "k".repeat(5000));
        let error = from_str(&long).unwrap_err().to_string();
        assert!(error.len() < 200, "the key is cut in the message: {error}");
    }

    #[test]
    fn deep_nesting_is_an_error_on_a_small_stack() {
        // The control and message threads run with 256 KiB stacks.
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let deep = "[".repeat(100_000) + &"]".repeat(100_000);
                let refused = from_str(&deep).is_err();
                let nested = "{\"a\":".repeat(120) + "1" + &"}".repeat(120);
                (refused, from_str(&nested).is_ok())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, (true, true));
    }
}
