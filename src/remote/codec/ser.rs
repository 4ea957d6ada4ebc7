//! The encoding side of the [codec](super): a serde `Serializer` that
//! appends to a vector.

use serde::Serialize;
use serde::ser::{self, SerializeMap, SerializeSeq};

use super::{Error, Kind, LONG_COUNT};

/// Appends values to a vector, in the format of the [codec](super).
pub(crate) struct Serializer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Serializer<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Serializer<'a> {
        Serializer { out }
    }

    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        self.out.extend_from_slice(&bytes);
    }

    /// A count in its short form if it fits, else its long form.
    #[inline(always)]
    fn count(&mut self, n: usize) -> Result<(), Error> {
        if n < usize::from(LONG_COUNT) {
            self.out.push(n as u8);
            Ok(())
        } else {
            self.long_count(n)
        }
    }

    #[inline(never)]
    fn long_count(&mut self, n: usize) -> Result<(), Error> {
        let n = u32::try_from(n).map_err(|_| Error::new(Kind::TooLong(n)))?;
        self.out.push(LONG_COUNT);
        self.put(n.to_le_bytes());
        Ok(())
    }

    /// The `len` fields of a struct, tuple struct or variant: their count,
    /// which the reader checks, then a [`Fields`] that checks it too.
    fn fields<'s>(&'s mut self, len: usize) -> Result<Fields<'s, 'a>, Error> {
        self.count(len)?;
        Ok(Fields::new(self, len))
    }

    /// A sequence or map of `len` elements (if known): its count, then a
    /// [`Counted`] that checks (or, for an unknown length, patches) it.
    fn counted<'s>(&'s mut self, len: Option<usize>) -> Result<Counted<'s, 'a>, Error> {
        let patch = match len {
            Some(n) => {
                self.count(n)?;
                None
            }
            None => {
                self.out.push(LONG_COUNT);
                let at = self.out.len();
                self.put([0; 4]);
                Some(at)
            }
        };
        Ok(Counted {
            ser: self,
            declared: len,
            patch,
            given: 0,
        })
    }
}

/// A sequence or map being written: counts its elements, then checks them
/// against the declared length or patches the count in.
pub(crate) struct Counted<'s, 'a> {
    ser: &'s mut Serializer<'a>,
    declared: Option<usize>,
    /// Where the 4 bytes of a long count wait for an unknown length.
    patch: Option<usize>,
    given: usize,
}

impl Counted<'_, '_> {
    /// An element (of a map: a key), counted.
    #[inline]
    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.given += 1;
        value.serialize(&mut *self.ser)
    }

    fn finish(self) -> Result<(), Error> {
        match (self.declared, self.patch) {
            (Some(declared), _) if declared != self.given => Err(Error::new(Kind::Miscounted {
                declared,
                given: self.given,
            })),
            (None, Some(at)) => {
                let n =
                    u32::try_from(self.given).map_err(|_| Error::new(Kind::TooLong(self.given)))?;
                self.ser.out[at..at + 4].copy_from_slice(&n.to_le_bytes());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Fields of a tuple or struct, written one after the other; as many as
/// declared, or an error.
pub(crate) struct Fields<'s, 'a> {
    ser: &'s mut Serializer<'a>,
    declared: usize,
    given: usize,
}

impl<'s, 'a> Fields<'s, 'a> {
    fn new(ser: &'s mut Serializer<'a>, declared: usize) -> Fields<'s, 'a> {
        Fields {
            ser,
            declared,
            given: 0,
        }
    }

    #[inline]
    fn field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.given += 1;
        value.serialize(&mut *self.ser)
    }

    #[inline]
    fn finish(self) -> Result<(), Error> {
        match self.given == self.declared {
            true => Ok(()),
            false => Err(Error::new(Kind::Miscounted {
                declared: self.declared,
                given: self.given,
            })),
        }
    }
}

impl<'s, 'a> ser::Serializer for &'s mut Serializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Counted<'s, 'a>;
    type SerializeTuple = Fields<'s, 'a>;
    type SerializeTupleStruct = Fields<'s, 'a>;
    type SerializeTupleVariant = Fields<'s, 'a>;
    type SerializeMap = Counted<'s, 'a>;
    type SerializeStruct = Fields<'s, 'a>;
    type SerializeStructVariant = Fields<'s, 'a>;

    #[inline(always)]
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push(u8::from(v));
        Ok(())
    }
    #[inline(always)]
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.out.push(v);
        Ok(())
    }
    #[inline(always)]
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline(always)]
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.put(v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.put(u32::from(v).to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.serialize_bytes(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.count(v.len())?;
        self.out.extend_from_slice(v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<(), Error> {
        self.out.push(0);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        self.out.push(1);
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), Error> {
        self.count(index as usize)
    }
    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.count(index as usize)?;
        value.serialize(self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Counted<'s, 'a>, Error> {
        self.counted(len)
    }
    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Fields<'s, 'a>, Error> {
        Ok(Fields::new(self, len))
    }
    #[inline]
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Fields<'s, 'a>, Error> {
        self.fields(len)
    }
    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Fields<'s, 'a>, Error> {
        self.count(index as usize)?;
        self.fields(len)
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Counted<'s, 'a>, Error> {
        self.counted(len)
    }
    #[inline]
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Fields<'s, 'a>, Error> {
        self.fields(len)
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Fields<'s, 'a>, Error> {
        self.count(index as usize)?;
        self.fields(len)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

impl SerializeSeq for Counted<'_, '_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl SerializeMap for Counted<'_, '_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        self.element(key)
    }
    #[inline]
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// The five kinds of fields are written alike (the count of a struct's, a
/// tuple struct's and a variant's came first). A struct's field
/// that `skip_serializing_if` leaves out is an error: the reader expects
/// every field in order, and without names it would take the next field's
/// bytes for the missing one.
macro_rules! fields {
    ($($trait:ident $method:ident $(($key:ident))?;)*) => {$(
        impl ser::$trait for Fields<'_, '_> {
            type Ok = ();
            type Error = Error;
            #[inline]
            fn $method<T: ?Sized + Serialize>(
                &mut self,
                $($key: &'static str,)?
                value: &T,
            ) -> Result<(), Error> {
                self.field(value)
            }
            $(
                #[cold]
                fn skip_field(&mut self, $key: &'static str) -> Result<(), Error> {
                    Err(Error::new(Kind::Skipped($key)))
                }
            )?
            #[inline]
            fn end(self) -> Result<(), Error> {
                self.finish()
            }
        }
    )*};
}

fields! {
    SerializeTuple serialize_element;
    SerializeTupleStruct serialize_field;
    SerializeTupleVariant serialize_field;
    SerializeStruct serialize_field (_key);
    SerializeStructVariant serialize_field (_key);
}
