//! The encoding of task values (arguments, results and the errors of
//! failed calls) inside a job's [records](super::message::records): a
//! serde format made for small values encoded one at a time.
//!
//! Message bodies stay [`postcard`]'s (see [`message`](super::message)):
//! they go once per job. Values go once per item of a `map`, where
//! postcard's variable-length integers were most of the cost of an item
//! (a loop with a branch per byte, each way, on both sides). Here an
//! integer is one fixed-width store and one load.
//!
//! # The format
//! * `bool`: one byte, 0 or 1. Integers and floats: their fixed width,
//!   little-endian (`u8`: 1 byte, ..., `u128`: 16). `char`: its scalar
//!   value as a `u32`.
//! * A **count** (the length of a string, a byte string, a sequence or a
//!   map, and an enum's variant index): one byte if below 255, else the
//!   byte 255 and a little-endian `u32`. A sequence whose length is not
//!   known in advance is written in the long form and patched at its end.
//! * `str` and bytes: a count, then the bytes. `Option`: a byte, 0 for
//!   `None`, 1 then the value for `Some`.
//! * Sequences and maps: a count, then the elements (a map's as key, value,
//!   key, value). Tuples and arrays: their elements in order, no count.
//!   Structs and tuple structs: the count of their fields, then the fields
//!   in order; the reader checks the count against the fields it expects.
//! * Enums: the variant's index as a count, then its fields as a struct's.
//!   Unit and unit structs: nothing. Newtypes: their inner value.
//!
//! Guarantees:
//! * What [`append`] writes, [`from_bytes`] reads back as the same value,
//!   for every type whose `Serialize` and `Deserialize` agree (proptests
//!   below).
//! * An error a type's own `Serialize` or `Deserialize` gives with
//!   `Error::custom(message)` keeps that message, at any depth.
//! * Malformed bytes are an [`Error`], never a panic, and never make the
//!   decoder allocate more than serde's cautious size hints allow.
//! * A sequence, tuple or struct that yields another number of elements
//!   than it declared is an error when encoded, and a struct read with
//!   other fields than it was written with (serde attributes that make the
//!   two sides differ) is an error when decoded: never a wrong value.
//! * The format is not self-describing, like postcard's: types that need
//!   `deserialize_any` (untagged enums, `#[serde(flatten)]`) are refused
//!   with an error that says so, and so is a struct that leaves a field
//!   out with `skip_serializing_if` (postcard writes it without the field,
//!   and the reader then takes the next field's bytes for it).

use std::fmt;

use serde::{Deserialize, Serialize};

mod de;
mod ser;

/// The byte that announces a long count (a `u32` follows).
const LONG_COUNT: u8 = u8::MAX;

/// Why a value failed to encode or decode. Boxed, so that the hot paths
/// return a single word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error(Box<Kind>);

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The value's own `Serialize` or `Deserialize` said so.
    Custom(String),
    /// The bytes end inside a value.
    End,
    /// Bytes are left after the value.
    Trailing(usize),
    /// A byte that is not a `bool`.
    Bool(u8),
    /// A `u32` that is not a `char`.
    Char(u32),
    /// A string that is not UTF-8.
    Utf8,
    /// An `Option` tag other than 0 or 1.
    OptionTag(u8),
    /// A count above `u32::MAX`.
    TooLong(usize),
    /// A sequence or map that yielded another number of elements than it
    /// declared.
    Miscounted { declared: usize, given: usize },
    /// The type needs a self-describing format.
    NotSelfDescribing,
    /// A struct left a field out (`skip_serializing_if`).
    Skipped(&'static str),
    /// A struct written with another number of fields than its reader
    /// expects.
    Fields { written: usize, expected: usize },
}

impl Error {
    #[cold]
    #[inline(never)]
    fn new(kind: Kind) -> Error {
        Error(Box::new(kind))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Kind::Custom(message) => f.write_str(message),
            Kind::End => f.write_str("the bytes end inside a value"),
            Kind::Trailing(n) => write!(f, "bytes are left after the value: {n}"),
            Kind::Bool(b) => write!(f, "{b} is not a bool"),
            Kind::Char(c) => write!(f, "{c:#x} is not a char"),
            Kind::Utf8 => f.write_str("a string is not UTF-8"),
            Kind::OptionTag(t) => write!(f, "{t} is not an Option tag"),
            Kind::TooLong(n) => write!(f, "a length of {n} is too long to encode"),
            Kind::Miscounted { declared, given } => write!(
                f,
                "a sequence, tuple or struct declared {declared} elements but gave {given}"
            ),
            Kind::Fields { written, expected } => write!(
                f,
                "a struct was written with {written} fields and is read with {expected}: \
                 serde attributes that differ between writing and reading \
                 (`skip_serializing_if` on a tuple field, `skip_serializing` or \
                 `skip_deserializing` alone, `tag` on a struct) need a format with \
                 field names"
            ),
            Kind::NotSelfDescribing => f.write_str(
                "the type needs a self-describing format (deserialize_any: \
                 untagged enums, flatten), which task values do not have",
            ),
            Kind::Skipped(field) => write!(
                f,
                "field `{field}` was left out by `skip_serializing_if`: task values \
                 carry no field names, so every field must be written"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl serde::ser::Error for Error {
    #[cold]
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error::new(Kind::Custom(message.to_string()))
    }
}

impl serde::de::Error for Error {
    #[cold]
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error::new(Kind::Custom(message.to_string()))
    }
}

/// Encodes `value` at the end of `out`; on failure `out` is unchanged.
#[inline(always)]
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    let result = value.serialize(&mut ser::Serializer::new(out));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Decodes a `T` that takes all of `bytes`.
#[inline(always)]
pub(crate) fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    let mut deserializer = de::Deserializer::new(bytes);
    let value = T::deserialize(&mut deserializer)?;
    match deserializer.left() {
        0 => Ok(value),
        n => Err(Error::new(Kind::Trailing(n))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Vec<u8> {
        let mut out = vec![0xAA];
        append(value, &mut out).unwrap();
        assert_eq!(out[0], 0xAA, "append keeps what was there");
        let back: T = from_bytes(&out[1..]).unwrap();
        assert_eq!(&back, value);
        out.split_off(1)
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Clone)]
    enum Shape {
        Empty,
        Dot(i16),
        Line(u8, Option<String>),
        Box { w: f64, h: f32, tags: Vec<char> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Clone)]
    struct Record {
        id: u64,
        name: String,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        shapes: Vec<Shape>,
        pairs: BTreeMap<i32, (bool, i128)>,
        unit: (),
        wide: u128,
        nested: Option<Option<Box<Record>>>,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Empty),
            any::<i16>().prop_map(Shape::Dot),
            (any::<u8>(), any::<Option<String>>()).prop_map(|(a, b)| Shape::Line(a, b)),
            (
                any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
                any::<f32>().prop_filter("NaN", |f| !f.is_nan()),
                prop::collection::vec(any::<char>(), 0..4)
            )
                .prop_map(|(w, h, tags)| Shape::Box { w, h, tags }),
        ]
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            ".{0,300}",
            prop::collection::vec(any::<u8>(), 0..600),
            prop::collection::vec(shape(), 0..5),
            prop::collection::btree_map(any::<i32>(), any::<(bool, i128)>(), 0..4),
            any::<u128>(),
        )
            .prop_map(|(id, name, blob, shapes, pairs, wide)| Record {
                id,
                name,
                blob,
                shapes,
                pairs,
                unit: (),
                wide,
                nested: None,
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(mut outer in record(), inner in record(), depth in 0..3u8) {
            outer.nested = match depth {
                0 => None,
                1 => Some(None),
                _ => Some(Some(Box::new(inner))),
            };
            round_trip(&outer);
        }

        #[test]
        fn integers_round_trip(a in any::<(u8, i8, u16, i16, u32, i32, u64, i64)>()) {
            let bytes = round_trip(&a);
            prop_assert_eq!(bytes.len(), 1 + 1 + 2 + 2 + 4 + 4 + 8 + 8);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = from_bytes::<Record>(&bytes);
            let _ = from_bytes::<Vec<Shape>>(&bytes);
            let _ = from_bytes::<(String, Vec<u64>, char)>(&bytes);
        }

        #[test]
        fn every_cut_of_a_value_is_an_error(value in record()) {
            let mut bytes = Vec::new();
            append(&value, &mut bytes).unwrap();
            for cut in 0..bytes.len() {
                prop_assert!(from_bytes::<Record>(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn counts_switch_to_the_long_form_at_255() {
        assert_eq!(round_trip(&vec![7u8; 254])[0], 254);
        let long = round_trip(&vec![7u8; 255]);
        assert_eq!(long[..5], [LONG_COUNT, 255, 0, 0, 0]);
        round_trip(&"x".repeat(70_000));
    }

    /// A sequence whose length serde does not know in advance.
    struct Evens(u32);

    impl Serialize for Evens {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..self.0).filter(|n| n % 2 == 0))
        }
    }

    #[test]
    fn sequences_of_unknown_length_are_patched() {
        for n in [0, 1, 600] {
            let mut out = Vec::new();
            append(&Evens(n), &mut out).unwrap();
            let back: Vec<u32> = from_bytes(&out).unwrap();
            assert_eq!(back, (0..n).filter(|n| n % 2 == 0).collect::<Vec<_>>());
        }
        let mut out = Vec::new();
        let map: BTreeMap<u8, u8> = (0..3).map(|n| (n, n)).collect();
        append(&map, &mut out).unwrap();
        assert_eq!(from_bytes::<BTreeMap<u8, u8>>(&out).unwrap(), map);
    }

    /// A sequence that declares one length and yields another.
    struct Liar;

    impl Serialize for Liar {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(3))?;
            seq.serialize_element(&1u8)?;
            seq.end()
        }
    }

    #[test]
    fn a_miscounted_sequence_fails_and_leaves_the_output_as_it_was() {
        let mut out = vec![1, 2];
        let e = append(&Liar, &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a sequence, tuple or struct declared 3 elements but gave 1"
        );
        assert_eq!(out, [1, 2]);
    }

    #[derive(Debug)]
    struct Unlucky(u8);

    impl Serialize for Unlucky {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                13 => Err(serde::ser::Error::custom("13 is unlucky")),
                n => s.serialize_u8(n),
            }
        }
    }

    impl<'de> Deserialize<'de> for Unlucky {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unlucky, D::Error> {
            match u8::deserialize(d)? {
                13 => Err(serde::de::Error::custom("13 is unlucky")),
                n => Ok(Unlucky(n)),
            }
        }
    }

    #[test]
    fn custom_messages_come_through_at_any_depth() {
        let deep = vec![(1u8, Some(vec![Unlucky(1), Unlucky(13)]))];
        let mut out = Vec::new();
        assert_eq!(
            append(&deep, &mut out).unwrap_err().to_string(),
            "13 is unlucky"
        );
        assert!(out.is_empty());

        append(&vec![(1u8, Some(vec![12u8, 13]))], &mut out).unwrap();
        let e = from_bytes::<Vec<(u8, Option<Vec<Unlucky>>)>>(&out).unwrap_err();
        assert_eq!(e.to_string(), "13 is unlucky");
    }

    #[test]
    fn serde_derive_messages_come_through_too() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Two {
            A,
            B,
        }
        let e = from_bytes::<Two>(&[2]).unwrap_err().to_string();
        assert!(e.contains("variant index 0 <= i < 2"), "{e}");
    }

    #[test]
    fn malformed_bytes_say_what_is_wrong() {
        let text = |r: Result<(), Error>| r.unwrap_err().to_string();
        assert_eq!(
            text(from_bytes::<u32>(&[1, 2]).map(drop)),
            "the bytes end inside a value"
        );
        assert_eq!(
            text(from_bytes::<u8>(&[1, 2]).map(drop)),
            "bytes are left after the value: 1"
        );
        assert_eq!(text(from_bytes::<bool>(&[2]).map(drop)), "2 is not a bool");
        assert_eq!(
            text(from_bytes::<Option<u8>>(&[3]).map(drop)),
            "3 is not an Option tag"
        );
        assert_eq!(
            text(from_bytes::<char>(&0xD800u32.to_le_bytes()).map(drop)),
            "0xd800 is not a char"
        );
        assert_eq!(
            text(from_bytes::<String>(&[1, 0xFF]).map(drop)),
            "a string is not UTF-8"
        );
        // A count that claims more than is there, in either form.
        assert!(from_bytes::<Vec<u8>>(&[LONG_COUNT, 0xFF, 0xFF, 0xFF, 0x7F]).is_err());
        assert!(from_bytes::<String>(&[200, b'a']).is_err());
    }

    #[test]
    fn self_describing_types_are_refused_with_a_reason() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Loose {
            N(u8),
        }
        let mut out = Vec::new();
        append(&Loose::N(1), &mut out).unwrap();
        let e = from_bytes::<Loose>(&out).unwrap_err().to_string();
        assert!(e.contains("self-describing"), "{e}");
    }

    #[test]
    fn a_field_left_out_is_refused_when_encoding() {
        #[derive(Debug, Serialize, Deserialize, PartialEq)]
        struct Sparse {
            #[serde(skip_serializing_if = "Option::is_none")]
            note: Option<u8>,
            #[serde(skip)]
            cache: u8,
            count: u32,
        }
        // Written in full, or with a field never written (`skip`), it goes.
        let full = Sparse {
            note: Some(1),
            cache: 0,
            count: 7,
        };
        round_trip(&full);
        // Left out on a condition: an error, not bytes that decode wrongly.
        let mut out = Vec::new();
        let sparse = Sparse { note: None, ..full };
        let e = append(&sparse, &mut out).unwrap_err().to_string();
        assert!(e.contains("field `note` was left out"), "{e}");
        assert!(out.is_empty());
    }

    /// Encodes `value` and decodes it as a `T`: the error's text.
    fn misread<T: DeserializeOwned + Debug>(value: &impl Serialize) -> String {
        let mut out = Vec::new();
        append(value, &mut out).unwrap();
        match from_bytes::<T>(&out) {
            Ok(wrong) => panic!("decoded as {wrong:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Serde attributes that make writing and reading differ, which a
    /// format without field names cannot follow: each is an error, where
    /// the fields alone would decode into a wrong value.
    #[test]
    fn structs_read_with_other_fields_than_written_are_errors() {
        fn is_zero(n: &u8) -> bool {
            *n == 0
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct Item(#[serde(skip_serializing_if = "is_zero")] u8, String);
        let e = misread::<Vec<Item>>(&vec![Item(0, "\u{1}A".into()), Item(5, "B".into())]);
        assert!(
            e.contains("written with 1 fields and is read with 2"),
            "{e}"
        );

        #[derive(Debug, Serialize, Deserialize)]
        enum Shape {
            Line(#[serde(skip_serializing_if = "is_zero")] u8, u8),
        }
        let e = misread::<Shape>(&Shape::Line(0, 1));
        assert!(e.contains("written with 1 fields"), "{e}");

        #[derive(Debug, Serialize, Deserialize)]
        #[allow(dead_code)] // read by Debug only
        struct Cached {
            a: u8,
            #[serde(skip_serializing)]
            cache: u8,
            b: Vec<u8>,
        }
        let cached = Cached {
            a: 1,
            cache: 0,
            b: vec![0],
        };
        let e = misread::<(Cached, u8)>(&(cached, 5u8));
        assert!(
            e.contains("written with 2 fields and is read with 3"),
            "{e}"
        );

        #[derive(Debug, Serialize, Deserialize)]
        struct Computed {
            #[serde(skip_deserializing)]
            derived: u8,
            b: u8,
        }
        let e = misread::<(Computed, Vec<u8>)>(&(Computed { derived: 7, b: 2 }, vec![9u8]));
        assert!(
            e.contains("written with 2 fields and is read with 1"),
            "{e}"
        );

        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        struct Tagged {
            a: u8,
            b: u16,
        }
        let bytes = serde_bytes::ByteBuf::from(vec![0u8; 96]);
        let e = misread::<(Tagged, serde_bytes::ByteBuf)>(&(Tagged { a: 1, b: 2 }, bytes));
        assert!(
            e.contains("written with 3 fields and is read with 2"),
            "{e}"
        );
    }

    /// A struct that declares more fields than it writes.
    struct Short;

    impl Serialize for Short {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut fields = s.serialize_struct("Short", 2)?;
            fields.serialize_field("a", &1u8)?;
            fields.end()
        }
    }

    #[test]
    fn a_struct_short_of_its_declared_fields_fails_to_encode() {
        let mut out = Vec::new();
        let e = append(&Short, &mut out).unwrap_err().to_string();
        assert!(e.contains("declared 2 elements but gave 1"), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn borrowed_strings_and_bytes_point_into_the_input() {
        let mut out = Vec::new();
        append(&("text", serde_bytes::Bytes::new(b"raw")), &mut out).unwrap();
        let (s, b): (&str, &serde_bytes::Bytes) = from_bytes(&out).unwrap();
        assert_eq!((s, &b[..]), ("text", &b"raw"[..]));
        assert!(out.as_ptr_range().contains(&s.as_ptr()));
    }
}
