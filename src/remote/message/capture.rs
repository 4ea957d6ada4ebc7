//! Recovering the message of a serde `custom` error, which postcard drops.
//!
//! postcard's `Error::custom` keeps only "Serde Serialization Error" (or
//! "... Deserialization ..."), so a user's `Error::custom("13 is unlucky")`
//! would never reach the future. Encoding and decoding stay postcard's; only
//! once postcard has failed with such an error is the value run again
//! through an adapter whose error type keeps the message. The hot path pays
//! nothing.
//!
//! Guarantees:
//! * [`serialize`] runs the value's `Serialize` against a serializer that
//!   writes nothing and returns the message of the `custom` error it ends
//!   with;
//! * [`deserialize`] reads the same bytes again with postcard's own
//!   deserializer, wrapped so that every `Deserialize` and `Visitor` at any
//!   depth (struct, tuple, sequence, map, enum, option, newtype) sees an
//!   error type that keeps messages, and returns the message the outermost
//!   failure carries;
//! * `None` when the failure carries no such message (then postcard's own
//!   text is all there is); never a panic of its own (a user's impl may still
//!   panic, as it could on the first run).

use std::cell::Cell;
use std::fmt::{self, Display};

use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Serialize, ser};

/// The message of the `custom` error that `value`'s `Serialize` fails with,
/// if it fails with one.
pub(crate) fn serialize<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    match value.serialize(Discard) {
        Err(Captured::Custom(message)) => Some(message),
        _ => None,
    }
}

/// The message of the `custom` error that decoding `bytes` as a `T` with
/// postcard fails with, if it fails with one.
pub(crate) fn deserialize<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Option<String> {
    let slot = Cell::new(None);
    let mut inner = postcard::Deserializer::from_bytes(bytes);
    match T::deserialize(Wrap {
        inner: &mut inner,
        slot: &slot,
    }) {
        Err(Captured::Custom(message)) => Some(message),
        _ => None,
    }
}

/// The adapter's error: a `custom` message, or the text of an error that
/// was not one (postcard's own).
#[derive(Debug)]
enum Captured {
    Custom(String),
    Other(String),
}

impl Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Captured::Custom(m) | Captured::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Captured {}

impl ser::Error for Captured {
    fn custom<T: Display>(msg: T) -> Self {
        Captured::Custom(msg.to_string())
    }
}

impl de::Error for Captured {
    fn custom<T: Display>(msg: T) -> Self {
        Captured::Custom(msg.to_string())
    }
}

/// Where a message waits while its error crosses postcard, whose error type
/// cannot hold it: parked on the way in, picked up on the way out.
type Parked = Cell<Option<String>>;

impl Captured {
    /// An error of the wrapped deserializer, with the message parked by
    /// whatever failed inside it.
    fn from_inner(error: impl Display, slot: &Parked) -> Captured {
        match slot.take() {
            Some(message) => Captured::Custom(message),
            None => Captured::Other(error.to_string()),
        }
    }

    /// This error as the wrapped deserializer's, parking the message.
    fn into_inner<E: de::Error>(self, slot: &Parked) -> E {
        match self {
            Captured::Custom(message) => {
                slot.set(Some(message));
                E::custom("(message parked)")
            }
            Captured::Other(text) => E::custom(text),
        }
    }
}

// ---- serialization ------------------------------------------------------------

/// A serializer that writes nothing: only its error matters. Postcard's
/// compact form is not human readable, so neither is this.
struct Discard;

impl ser::Serializer for Discard {
    type Ok = ();
    type Error = Captured;
    type SerializeSeq = Discard;
    type SerializeTuple = Discard;
    type SerializeTupleStruct = Discard;
    type SerializeTupleVariant = Discard;
    type SerializeMap = Discard;
    type SerializeStruct = Discard;
    type SerializeStructVariant = Discard;

    fn serialize_bool(self, _: bool) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Captured> {
        value.serialize(Discard)
    }
    fn serialize_unit(self) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Captured> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Captured> {
        value.serialize(Discard)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Captured> {
        value.serialize(Discard)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn serialize_tuple(self, _: usize) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Discard, Captured> {
        Ok(Discard)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The compound parts of [`Discard`]: each element is serialized into
/// nothing, so that its error, if any, comes out.
macro_rules! discard_compound {
    ($($trait:ident :: $method:ident ($($name:ident),*);)*) => {$(
        impl ser::$trait for Discard {
            type Ok = ();
            type Error = Captured;
            fn $method<T: Serialize + ?Sized>(
                &mut self,
                $($name: &'static str,)*
                value: &T,
            ) -> Result<(), Captured> {
                value.serialize(Discard)
            }
            fn end(self) -> Result<(), Captured> {
                Ok(())
            }
        }
    )*};
}

discard_compound! {
    SerializeSeq::serialize_element();
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(_key);
    SerializeStructVariant::serialize_field(_key);
}

impl ser::SerializeMap for Discard {
    type Ok = ();
    type Error = Captured;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Captured> {
        key.serialize(Discard)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Captured> {
        value.serialize(Discard)
    }
    fn end(self) -> Result<(), Captured> {
        Ok(())
    }
}

// ---- deserialization ----------------------------------------------------------

/// A deserializer (postcard's, or one it hands a visitor) whose error keeps
/// messages.
struct Wrap<'s, D> {
    inner: D,
    slot: &'s Parked,
}

/// A visitor given to the wrapped deserializer: it hands the user's visitor
/// wrapped accessors and an error type that keeps messages.
struct Visit<'s, V> {
    inner: V,
    slot: &'s Parked,
}

/// A seed given to the wrapped deserializer: it deserializes through
/// [`Wrap`].
struct Seed<'s, S> {
    inner: S,
    slot: &'s Parked,
}

/// The wrapped deserializer's sequence, map, enum and variant accessors.
struct Access<'s, A> {
    inner: A,
    slot: &'s Parked,
}

macro_rules! wrap_deserialize {
    ($($method:ident ($($arg:ident : $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Captured> {
            let slot = self.slot;
            self.inner
                .$method($($arg,)* Visit { inner: visitor, slot })
                .map_err(|e| Captured::from_inner(e, slot))
        }
    )*};
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Wrap<'_, D> {
    type Error = Captured;

    wrap_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! wrap_visit {
    ($($method:ident ($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v).map_err(|e: Captured| e.into_inner(self.slot))
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    wrap_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner
            .visit_none()
            .map_err(|e: Captured| e.into_inner(self.slot))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner
            .visit_unit()
            .map_err(|e: Captured| e.into_inner(self.slot))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let slot = self.slot;
        let inner = Wrap { inner: d, slot };
        self.inner.visit_some(inner).map_err(|e| e.into_inner(slot))
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let slot = self.slot;
        let inner = Wrap { inner: d, slot };
        self.inner
            .visit_newtype_struct(inner)
            .map_err(|e| e.into_inner(slot))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        let inner = Access { inner: seq, slot };
        self.inner.visit_seq(inner).map_err(|e| e.into_inner(slot))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        let inner = Access { inner: map, slot };
        self.inner.visit_map(inner).map_err(|e| e.into_inner(slot))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        let inner = Access { inner: data, slot };
        self.inner.visit_enum(inner).map_err(|e| e.into_inner(slot))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let slot = self.slot;
        self.inner
            .deserialize(Wrap { inner: d, slot })
            .map_err(|e| e.into_inner(slot))
    }
}

impl<'s, A> Access<'s, A> {
    fn seed<S>(&self, inner: S) -> Seed<'s, S> {
        Seed {
            inner,
            slot: self.slot,
        }
    }

    fn error(&self, error: impl Display) -> Captured {
        Captured::from_inner(error, self.slot)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<'_, A> {
    type Error = Captured;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Captured> {
        let seed = self.seed(seed);
        self.inner
            .next_element_seed(seed)
            .map_err(|e| self.error(e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<'_, A> {
    type Error = Captured;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Captured> {
        let seed = self.seed(seed);
        self.inner.next_key_seed(seed).map_err(|e| self.error(e))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Captured> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed).map_err(|e| self.error(e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 's, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<'s, A> {
    type Error = Captured;
    type Variant = Access<'s, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Captured> {
        let slot = self.slot;
        let seed = self.seed(seed);
        match self.inner.variant_seed(seed) {
            Ok((value, variant)) => Ok((
                value,
                Access {
                    inner: variant,
                    slot,
                },
            )),
            Err(e) => Err(Captured::from_inner(e, slot)),
        }
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<'_, A> {
    type Error = Captured;

    fn unit_variant(self) -> Result<(), Captured> {
        let slot = self.slot;
        self.inner
            .unit_variant()
            .map_err(|e| Captured::from_inner(e, slot))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Captured> {
        let slot = self.slot;
        let seed = self.seed(seed);
        self.inner
            .newtype_variant_seed(seed)
            .map_err(|e| Captured::from_inner(e, slot))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Captured> {
        let slot = self.slot;
        let visitor = Visit {
            inner: visitor,
            slot,
        };
        self.inner
            .tuple_variant(len, visitor)
            .map_err(|e| Captured::from_inner(e, slot))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Captured> {
        let slot = self.slot;
        let visitor = Visit {
            inner: visitor,
            slot,
        };
        self.inner
            .struct_variant(fields, visitor)
            .map_err(|e| Captured::from_inner(e, slot))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserializer, Serializer};

    use super::*;
    use crate::remote::message::{append, explain_de, explain_ser, from_bytes};

    /// What the pool does: postcard, then the explanation on failure.
    fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        append(value, out).map_err(|e| explain_ser(value, e))
    }

    fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, String> {
        from_bytes(bytes).map_err(|e| explain_de::<T>(bytes, e))
    }

    /// A number that refuses to be 13, both ways, by a `custom` error of the
    /// (de)serializer it is given.
    #[derive(Debug, PartialEq)]
    struct Unlucky(u32);

    impl Serialize for Unlucky {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 == 13 {
                return Err(ser::Error::custom("13 is unlucky"));
            }
            s.serialize_u32(self.0)
        }
    }

    impl<'de> Deserialize<'de> for Unlucky {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match u32::deserialize(d)? {
                13 => Err(de::Error::custom("13 is unlucky")),
                n => Ok(Unlucky(n)),
            }
        }
    }

    /// Refuses 13 from inside its visitor, with the visitor's error type.
    #[derive(Debug, PartialEq)]
    struct Picky(u32);

    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Picky;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a number other than 13")
                }
                fn visit_u32<E: de::Error>(self, n: u32) -> Result<Picky, E> {
                    match n {
                        13 => Err(E::custom("13 is picky")),
                        n => Ok(Picky(n)),
                    }
                }
            }
            d.deserialize_u32(V)
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape<T> {
        Unit,
        Newtype(T),
        Tuple(u8, T),
        Struct { x: u8, y: T },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapper<T>(T);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Nested<T> {
        name: String,
        items: Vec<Option<Wrapper<T>>>,
        table: BTreeMap<String, T>,
        shape: Shape<T>,
        pair: (u8, T),
    }

    fn nested<T>(make: impl Fn(u32) -> T, bad: &str) -> Nested<T> {
        let n = |at: &str| make(if at == bad { 13 } else { 1 });
        Nested {
            name: "n".into(),
            items: vec![None, Some(Wrapper(n("items")))],
            table: [("k".to_owned(), n("table"))].into(),
            shape: match bad {
                "tuple" => Shape::Tuple(0, n("tuple")),
                "struct" => Shape::Struct {
                    x: 0,
                    y: n("struct"),
                },
                _ => Shape::Newtype(n("newtype")),
            },
            pair: (0, n("pair")),
        }
    }

    const PLACES: [&str; 6] = ["items", "table", "newtype", "tuple", "struct", "pair"];

    #[test]
    fn serialize_keeps_the_message_at_any_depth() {
        for place in PLACES {
            let value = nested(Unlucky, place);
            let mut out = vec![7];
            let e = encode(&value, &mut out).unwrap_err();
            assert_eq!(e, "13 is unlucky", "at {place}");
            assert_eq!(out, [7], "left unchanged");
        }
        let mut out = Vec::new();
        append(&nested(Unlucky, "none"), &mut out).unwrap();
        assert_eq!(decode(&out), Ok(nested(Unlucky, "none")));
    }

    #[test]
    fn deserialize_keeps_the_message_at_any_depth() {
        for place in PLACES {
            let mut bytes = Vec::new();
            append(&nested(|n| n, place), &mut bytes).unwrap();
            let e = decode::<Nested<Unlucky>>(&bytes).unwrap_err();
            assert_eq!(e, "13 is unlucky", "at {place}");
            let e = decode::<Nested<Picky>>(&bytes).unwrap_err();
            assert_eq!(e, "13 is picky", "at {place}");
            assert_eq!(
                deserialize::<Nested<Picky>>(&bytes).as_deref(),
                Some("13 is picky")
            );
        }
    }

    #[test]
    fn serde_derive_messages_come_through_too() {
        // A variant index past the end: serde's derive says so.
        let e = decode::<Shape<u8>>(&[9]).unwrap_err();
        assert!(e.contains("variant index"), "{e}");
    }

    #[test]
    fn postcard_failures_keep_postcard_text() {
        // Cut short: not a custom error, no second run.
        let mut bytes = Vec::new();
        append(&nested(|n| n, "none"), &mut bytes).unwrap();
        let e = decode::<Nested<Unlucky>>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(e, postcard::Error::DeserializeUnexpectedEnd.to_string());
        // Postcard's own refusal (a sequence of unknown length).
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..3).filter(|_| true))
            }
        }
        let e = encode(&Unsized, &mut Vec::new()).unwrap_err();
        assert_eq!(e, postcard::Error::SerializeSeqLengthUnknown.to_string());
        assert_eq!(serialize(&Unsized), None);
    }
}
