//! The data dictionary: what a firmware build says about itself through `identify`.
//!
//! It is zlib-compressed JSON with the keys `commands` and `responses` (format string → id),
//! `output` (printf-style debug strings → id), `enumerations` (name → {symbol → value or
//! [first value, count]}), `config` (constants such as `CLOCK_FREQ` and `MCU`), `version`,
//! `build_versions`, `app` and `license`. Unknown keys are ignored, as Klipper's host does.
//!
//! A parameter is enumerated when its name equals an enumeration's name or ends in `_` plus it
//! (`step_pin` uses `pin`). The range form `"PA0": [0, 16]` stands for PA0..PA15 → 0..15: the
//! symbol's trailing digits give the first suffix.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::msgformat::{MessageError, MessageFormat, Value};

/// Decompressed dictionaries larger than this are refused (real ones are 10–60 KiB).
pub const MAX_DICTIONARY_BYTES: usize = 16 << 20;

/// Why a dictionary could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DictionaryError {
    /// The identify data is not a valid zlib stream.
    #[error("the identify data is not valid zlib: {0}")]
    Zlib(String),
    /// The text is not JSON.
    #[error("the dictionary is not valid JSON: {0}")]
    Json(String),
    /// A key has the wrong shape.
    #[error("dictionary key '{key}': {why}")]
    Shape {
        /// The key (with its path, such as `enumerations.pin`).
        key: String,
        /// What was expected.
        why: String,
    },
    /// A message format is invalid.
    #[error(transparent)]
    Format(#[from] MessageError),
    /// Two messages share an id.
    #[error("messages '{first}' and '{second}' share id {id}")]
    DuplicateId {
        /// The id.
        id: i32,
        /// One format.
        first: String,
        /// The other.
        second: String,
    },
    /// A required constant is absent or unusable.
    #[error("the dictionary's config has no usable {0}")]
    MissingConstant(&'static str),
}

/// One enumeration: symbols and their integer values, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enumeration {
    /// The enumeration's name (`pin`, `static_string_id`).
    pub name: String,
    by_name: HashMap<String, i64>,
    by_value: HashMap<i64, String>,
}

impl Enumeration {
    /// The symbol for `value`, if the enumeration has one.
    pub fn name_of(&self, value: i64) -> Option<&str> {
        self.by_value.get(&value).map(String::as_str)
    }

    /// The value of `symbol`, if the enumeration has it.
    pub fn value_of(&self, symbol: &str) -> Option<i64> {
        self.by_name.get(symbol).copied()
    }

    /// How many symbols it has.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every symbol (unordered).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether it has no symbols.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn insert(&mut self, symbol: String, value: i64) {
        // The first symbol for a value names it when decoding, as in Klipper's reverse map built
        // in dictionary order; later aliases still encode.
        self.by_value.entry(value).or_insert_with(|| symbol.clone());
        self.by_name.insert(symbol, value);
    }
}

/// A constant from the dictionary's `config`.
#[derive(Debug, Clone, PartialEq)]
pub enum Constant {
    /// An integer, such as `CLOCK_FREQ`.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string, such as `MCU`.
    Str(String),
}

/// A parsed data dictionary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dictionary {
    /// `app` (normally "Klipper").
    pub app: Option<String>,
    /// The firmware version.
    pub version: Option<String>,
    /// The compiler and binutils versions.
    pub build_versions: Option<String>,
    /// `license`.
    pub license: Option<String>,
    /// The constants.
    pub config: BTreeMap<String, Constant>,
    /// The enumerations by name.
    pub enumerations: BTreeMap<String, Arc<Enumeration>>,
    messages: HashMap<i32, MessageFormat>,
    commands: HashMap<String, i32>,
    responses: HashMap<String, i32>,
}

impl Dictionary {
    /// Reads the zlib-compressed identify data as the MCU sends it.
    ///
    /// # Errors
    /// When the data is not zlib, not JSON, or not a dictionary.
    pub fn from_identify_data(data: &[u8]) -> Result<Self, DictionaryError> {
        let json =
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, MAX_DICTIONARY_BYTES)
                .map_err(|e| DictionaryError::Zlib(format!("{:?}", e.status)))?;
        let text = String::from_utf8(json).map_err(|e| DictionaryError::Json(e.to_string()))?;
        Self::from_json(&text)
    }

    /// Reads a dictionary from its JSON text (a `klipper.dict` file).
    ///
    /// # Errors
    /// When the text is not JSON or a key has the wrong shape.
    pub fn from_json(text: &str) -> Result<Self, DictionaryError> {
        let root: Json =
            serde_json::from_str(text).map_err(|e| DictionaryError::Json(e.to_string()))?;
        let Json::Object(root) = root else {
            return Err(shape("(root)", "an object"));
        };
        let string = |key: &str| root.get(key).and_then(Json::as_str).map(str::to_owned);
        let mut dict = Dictionary {
            app: string("app"),
            version: string("version"),
            build_versions: string("build_versions"),
            license: string("license"),
            ..Dictionary::default()
        };
        if let Some(config) = root.get("config") {
            let obj = config
                .as_object()
                .ok_or_else(|| shape("config", "an object"))?;
            for (k, v) in obj {
                let c = match v {
                    Json::Number(n) => match n.as_i64() {
                        Some(i) => Constant::Int(i),
                        None => Constant::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    Json::String(s) => Constant::Str(s.clone()),
                    _ => return Err(shape(&format!("config.{k}"), "a number or a string")),
                };
                dict.config.insert(k.clone(), c);
            }
        }
        if let Some(enums) = root.get("enumerations") {
            let obj = enums
                .as_object()
                .ok_or_else(|| shape("enumerations", "an object"))?;
            for (name, symbols) in obj {
                dict.enumerations
                    .insert(name.clone(), Arc::new(parse_enumeration(name, symbols)?));
            }
        }
        for (key, output) in [("commands", false), ("responses", false), ("output", true)] {
            let Some(table) = root.get(key) else { continue };
            let obj = table.as_object().ok_or_else(|| shape(key, "an object"))?;
            for (format, id) in obj {
                let id = id
                    .as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| shape(&format!("{key}.{format}"), "an integer id"))?;
                let mut msg = if output {
                    MessageFormat::parse_output(id, format)?
                } else {
                    MessageFormat::parse_message(id, format)?
                };
                for p in &mut msg.params {
                    p.enumeration = dict.enumeration_for(&p.name);
                }
                match key {
                    "commands" => dict.commands.insert(msg.name.clone(), id),
                    "responses" => dict.responses.insert(msg.name.clone(), id),
                    _ => None,
                };
                if let Some(other) = dict.messages.get(&id) {
                    return Err(DictionaryError::DuplicateId {
                        id,
                        first: other.format.clone(),
                        second: msg.format,
                    });
                }
                dict.messages.insert(id, msg);
            }
        }
        Ok(dict)
    }

    /// The enumeration a parameter called `param` uses, if any: an exact name match first, else
    /// the longest enumeration name that `param` ends with after an underscore.
    fn enumeration_for(&self, param: &str) -> Option<Arc<Enumeration>> {
        if let Some(e) = self.enumerations.get(param) {
            return Some(Arc::clone(e));
        }
        self.enumerations
            .iter()
            .filter(|(name, _)| {
                param.len() > name.len() + 1
                    && param.ends_with(name.as_str())
                    && param.as_bytes()[param.len() - name.len() - 1] == b'_'
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, e)| Arc::clone(e))
    }

    /// The message with this id.
    pub fn message(&self, id: i32) -> Option<&MessageFormat> {
        self.messages.get(&id)
    }

    /// The command called `name` (`queue_step`).
    pub fn command(&self, name: &str) -> Option<&MessageFormat> {
        self.commands.get(name).and_then(|id| self.messages.get(id))
    }

    /// The command called `name`, or an error saying this MCU does not have it.
    ///
    /// # Errors
    /// When the dictionary has no such command.
    pub fn require_command(&self, name: &str) -> Result<&MessageFormat, MessageError> {
        self.command(name)
            .ok_or_else(|| MessageError::BadArguments {
                name: name.to_owned(),
                why: "this MCU's dictionary has no such command".to_owned(),
            })
    }

    /// Encodes the command called `name` with `values` (message id and parameters), ready for
    /// [`crate::link::HostLink::send`].
    ///
    /// # Errors
    /// When the dictionary has no such command, or the values do not fit its parameters.
    pub fn encode_command(&self, name: &str, values: &[Value]) -> Result<Vec<u8>, MessageError> {
        let format = self.require_command(name)?;
        let mut out = Vec::new();
        format.encode(values, &mut out)?;
        Ok(out)
    }

    /// Encodes a command from Klipper's text form (`config_stepper oid=2 step_pin=PF0 …`), the
    /// way klippy's `create_command` does: parameters by name in any order, enumerated values by
    /// symbol (or as numbers), byte strings as written.
    ///
    /// # Errors
    /// An unknown command, a missing or unknown parameter, a value that is not a number or not a
    /// symbol of its enumeration.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u8>, MessageError> {
        let mut words = text.split_whitespace();
        let name = words.next().unwrap_or("");
        let format = self.require_command(name)?;
        let bad = |why: String| MessageError::BadArguments {
            name: name.to_owned(),
            why,
        };
        let mut given: Vec<(&str, &str)> = Vec::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad(format!("'{w}' is not key=value")))?;
            given.push((k, v));
        }
        let mut values = Vec::with_capacity(format.params.len());
        for p in &format.params {
            let (_, v) = given
                .iter()
                .find(|(k, _)| *k == p.name)
                .ok_or_else(|| bad(format!("missing parameter '{}'", p.name)))?;
            if p.kind.is_bytes() {
                values.push(Value::Bytes(v.as_bytes().to_vec()));
                continue;
            }
            let n = match v.parse::<i64>() {
                Ok(n) => n,
                Err(_) => p
                    .enumeration
                    .as_ref()
                    .and_then(|e| e.value_of(v))
                    .ok_or_else(|| bad(format!("'{v}' is not a valid value for '{}'", p.name)))?,
            };
            values.push(Value::Int(n));
        }
        if let Some((k, _)) = given
            .iter()
            .find(|(k, _)| !format.params.iter().any(|p| p.name == *k))
        {
            return Err(bad(format!("unknown parameter '{k}'")));
        }
        let mut out = Vec::new();
        format.encode(&values, &mut out)?;
        Ok(out)
    }

    /// The response called `name` (`clock`).
    pub fn response(&self, name: &str) -> Option<&MessageFormat> {
        self.responses
            .get(name)
            .and_then(|id| self.messages.get(id))
    }

    /// Every message, in no particular order.
    pub fn messages(&self) -> impl Iterator<Item = &MessageFormat> {
        self.messages.values()
    }

    /// How many commands, responses and output formats it declares.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (c, r) = (self.commands.len(), self.responses.len());
        (c, r, self.messages.len() - c - r)
    }

    /// `CLOCK_FREQ` in Hz.
    ///
    /// # Errors
    /// When the constant is absent or not a positive number.
    pub fn clock_freq(&self) -> Result<f64, DictionaryError> {
        #[allow(clippy::cast_precision_loss)]
        match self.config.get("CLOCK_FREQ") {
            Some(Constant::Int(i)) if *i > 0 => Ok(*i as f64),
            Some(Constant::Float(f)) if *f > 0.0 => Ok(*f),
            _ => Err(DictionaryError::MissingConstant("CLOCK_FREQ")),
        }
    }

    /// The `MCU` constant (`atmega2560`, `stm32f446xx`), if present.
    pub fn mcu(&self) -> Option<&str> {
        match self.config.get("MCU") {
            Some(Constant::Str(s)) => Some(s),
            _ => None,
        }
    }
}

fn shape(key: &str, expected: &str) -> DictionaryError {
    DictionaryError::Shape {
        key: key.to_owned(),
        why: format!("expected {expected}"),
    }
}

fn parse_enumeration(name: &str, symbols: &Json) -> Result<Enumeration, DictionaryError> {
    let obj = symbols
        .as_object()
        .ok_or_else(|| shape(&format!("enumerations.{name}"), "an object"))?;
    let mut e = Enumeration {
        name: name.to_owned(),
        ..Enumeration::default()
    };
    for (symbol, value) in obj {
        let key = || format!("enumerations.{name}.{symbol}");
        match value {
            Json::Number(n) => e.insert(
                symbol.clone(),
                n.as_i64().ok_or_else(|| shape(&key(), "an integer"))?,
            ),
            Json::Array(range) => {
                let [first, count] = range.as_slice() else {
                    return Err(shape(&key(), "[first value, count]"));
                };
                let (Some(first), Some(count)) = (first.as_i64(), count.as_i64()) else {
                    return Err(shape(&key(), "[first value, count] as integers"));
                };
                if !(0..=65_536).contains(&count) {
                    return Err(shape(&key(), "a count between 0 and 65536"));
                }
                let root = symbol.trim_end_matches(|c: char| c.is_ascii_digit());
                let start: i64 = symbol[root.len()..].parse().unwrap_or(0);
                for i in 0..count {
                    e.insert(format!("{root}{}", start + i), first + i);
                }
            }
            _ => return Err(shape(&key(), "an integer or [first value, count]")),
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
        "app": "Klipper", "version": "v0.13.0", "license": "GNU GPLv3",
        "config": {"CLOCK_FREQ": 16000000, "MCU": "atmega2560", "PWM_MAX": 255, "BUS_PINS_spi": "PB3,PB2,PB1"},
        "enumerations": {"pin": {"PA0": [0, 8], "PB0": [8, 8], "PH10": [100, 2]}, "spi_bus": {"spi": 0}},
        "commands": {"config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c step_pulse_ticks=%u": 14,
                     "identify offset=%u count=%c": 1, "get_clock": 96},
        "responses": {"identify_response offset=%u data=%.*s": 0, "clock clock=%u": -5},
        "output": {"Stepper too far in past %u": 200}
    }"#;

    #[test]
    fn reads_every_key() {
        let d = Dictionary::from_json(SAMPLE).expect("valid");
        assert_eq!(d.version.as_deref(), Some("v0.13.0"));
        assert_eq!(d.clock_freq(), Ok(16_000_000.0));
        assert_eq!(d.mcu(), Some("atmega2560"));
        assert_eq!(d.counts(), (3, 2, 1));
        assert_eq!(d.command("get_clock").map(|m| m.id), Some(96));
        assert_eq!(d.response("clock").map(|m| m.id), Some(-5));
        assert_eq!(d.message(200).map(|m| m.params.len()), Some(1));
    }

    #[test]
    fn enumeration_ranges_expand_from_the_trailing_digits() {
        let d = Dictionary::from_json(SAMPLE).expect("valid");
        let pin = &d.enumerations["pin"];
        assert_eq!(pin.len(), 18);
        assert_eq!(pin.value_of("PA7"), Some(7));
        assert_eq!(pin.value_of("PB0"), Some(8));
        assert_eq!(pin.value_of("PH11"), Some(101));
        assert_eq!(pin.name_of(15), Some("PB7"));
        assert_eq!(pin.value_of("PA8"), None);
    }

    #[test]
    fn parameters_find_their_enumeration_by_suffix() {
        let d = Dictionary::from_json(SAMPLE).expect("valid");
        let m = d.command("config_stepper").expect("present");
        let enums: Vec<_> = m
            .params
            .iter()
            .map(|p| p.enumeration.as_ref().map(|e| e.name.as_str()))
            .collect();
        assert_eq!(enums, [None, Some("pin"), Some("pin"), None, None]);
        let mut bytes = Vec::new();
        crate::vlq::encode(2, &mut bytes);
        crate::vlq::encode(9, &mut bytes);
        crate::vlq::encode(77, &mut bytes);
        crate::vlq::encode(0, &mut bytes);
        crate::vlq::encode(32, &mut bytes);
        let (v, _) = m.decode(&bytes).expect("decodes");
        assert_eq!(
            m.format_values(&v),
            "config_stepper oid=2 step_pin=PB1 dir_pin=?77 invert_step=0 step_pulse_ticks=32"
        );
    }

    #[test]
    fn bad_dictionaries_say_what_is_wrong() {
        let e = Dictionary::from_json("[1]").expect_err("not an object");
        assert_eq!(e.to_string(), "dictionary key '(root)': expected an object");
        let e = Dictionary::from_json(r#"{"commands": {"a x=%u": "one"}}"#).expect_err("bad id");
        assert_eq!(
            e.to_string(),
            "dictionary key 'commands.a x=%u': expected an integer id"
        );
        let e = Dictionary::from_json(r#"{"commands": {"a": 3, "b": 3}}"#).expect_err("dup");
        assert!(matches!(e, DictionaryError::DuplicateId { id: 3, .. }));
        let e =
            Dictionary::from_json(r#"{"enumerations": {"pin": {"PA0": [0]}}}"#).expect_err("range");
        assert!(e.to_string().contains("[first value, count]"));
        assert_eq!(
            Dictionary::from_json("{}")
                .expect("empty is fine")
                .clock_freq(),
            Err(DictionaryError::MissingConstant("CLOCK_FREQ"))
        );
        assert!(matches!(
            Dictionary::from_identify_data(b"not zlib"),
            Err(DictionaryError::Zlib(_))
        ));
    }

    #[test]
    fn commands_encode_by_name() {
        let d = Dictionary::from_json(SAMPLE).expect("valid");
        assert_eq!(
            d.encode_command("get_clock", &[]),
            Ok(vec![0x80, 0x60]),
            "id 96 takes two bytes"
        );
        assert!(d.encode_command("no_such_command", &[]).is_err());
        assert!(d.encode_command("get_clock", &[Value::Int(1)]).is_err());
    }

    #[test]
    fn identify_data_is_zlib_json() {
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(SAMPLE.as_bytes(), 9);
        let d = Dictionary::from_identify_data(&compressed).expect("valid");
        assert_eq!(d, Dictionary::from_json(SAMPLE).expect("valid"));
    }

    #[test]
    fn all_oracle_dictionaries_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/oracle/dict");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).expect("the fixtures folder") {
            let path = entry.expect("an entry").path();
            let text = std::fs::read_to_string(&path).expect("readable");
            let d =
                Dictionary::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(d.clock_freq().is_ok(), "{}: no CLOCK_FREQ", path.display());
            assert!(
                d.command("identify").is_some_and(|m| m.id == 1),
                "{}",
                path.display()
            );
            assert!(
                d.response("identify_response").is_some_and(|m| m.id == 0),
                "{}",
                path.display()
            );
            assert!(
                d.enumerations.contains_key("static_string_id"),
                "{}",
                path.display()
            );
            // Every board names its pins; only the host simulator build (no MCU constant) has none.
            if d.mcu().is_some() {
                assert!(
                    d.enumerations.get("pin").is_some_and(|p| !p.is_empty()),
                    "{}",
                    path.display()
                );
            }
            loaded += 1;
        }
        assert_eq!(loaded, 38);
    }
}
