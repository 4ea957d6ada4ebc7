//! A user's serde error keeps its words: a `Serialize` or `Deserialize`
//! that fails with `Error::custom("13 is unlucky")` is reported with that
//! text, whichever of the four crossings (arguments out of the parent, into
//! the worker, result out of the worker, into the parent) it fails at, for
//! `submit` and for each item of a `map` chunk.
#![cfg(all(feature = "process", unix))]

use std::time::Duration;

use concurrent_futures::{Error, MapOptions, ProcessPoolExecutor, task};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const LIMIT: Duration = Duration::from_secs(30);
const UNLUCKY: &str = "13 is unlucky";

/// Refuses to serialize 13.
#[derive(Debug, Clone, PartialEq)]
struct NoEncode13(u32);

impl Serialize for NoEncode13 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom(UNLUCKY));
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for NoEncode13 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(NoEncode13)
    }
}

/// Refuses to deserialize 13.
#[derive(Debug, Clone, PartialEq)]
struct NoDecode13(u32);

impl Serialize for NoDecode13 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for NoDecode13 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            13 => Err(serde::de::Error::custom(UNLUCKY)),
            n => Ok(NoDecode13(n)),
        }
    }
}

/// Nests the value, so that the error crosses derived code on its way out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Envelope<T> {
    label: String,
    values: Vec<Option<T>>,
}

fn envelope<T>(value: T) -> Envelope<T> {
    Envelope {
        label: "e".into(),
        values: vec![None, Some(value)],
    }
}

#[task]
fn sum_encode(e: Envelope<NoEncode13>) -> u32 {
    e.values.into_iter().flatten().map(|v| v.0).sum()
}

#[task]
fn sum_decode(e: Envelope<NoDecode13>) -> u32 {
    e.values.into_iter().flatten().map(|v| v.0).sum()
}

#[task]
fn make_encode(n: u32) -> Envelope<NoEncode13> {
    envelope(NoEncode13(n))
}

#[task]
fn make_decode(n: u32) -> Envelope<NoDecode13> {
    envelope(NoDecode13(n))
}

/// The error is `Error::Serialization`, says where, and keeps the words.
fn assert_unlucky<T: std::fmt::Debug>(result: Result<T, Error>, place: &str) {
    match result {
        Err(e @ Error::Serialization(_)) => {
            let text = e.to_string();
            assert!(text.contains(UNLUCKY), "{text}");
            assert!(text.contains(place), "{text}");
            // `source()` chains down to the value's own words, on whichever
            // side the value failed.
            let mut chain = std::iter::successors(std::error::Error::source(&e), |e| e.source());
            assert!(
                chain.any(|e| e.to_string() == UNLUCKY),
                "no source says {UNLUCKY:?}: {e:?}"
            );
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
}

/// `map` with one chunk of three items, the middle one failing: the others
/// succeed, the middle one has the user's words.
fn assert_map<R: std::fmt::Debug + PartialEq>(got: Vec<Result<R, Error>>, ok: [R; 2], place: &str) {
    let [first, last] = ok;
    let mut got = got.into_iter();
    assert_eq!(got.next(), Some(Ok(first)));
    assert_unlucky(got.next().unwrap(), place);
    assert_eq!(got.next(), Some(Ok(last)));
    assert_eq!(got.next(), None);
}

fn pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::new(1).unwrap()
}

fn chunk() -> MapOptions {
    MapOptions::new().chunksize(3).timeout(LIMIT)
}

#[test]
fn argument_serialize_in_the_parent() {
    let pool = pool();
    let place = "arguments failed to serialize";
    assert_unlucky(pool.submit(sum_encode, envelope(NoEncode13(13))), place);
    let items = [1, 13, 2].map(|n| envelope(NoEncode13(n)));
    let got = pool.map_with(sum_encode, items, chunk()).unwrap().collect();
    assert_map(got, [1, 2], place);
}

#[test]
fn argument_deserialize_in_the_worker() {
    let pool = pool();
    let place = "arguments failed to deserialize in the worker";
    let f = pool.submit(sum_decode, envelope(NoDecode13(13))).unwrap();
    assert_unlucky(f.result_timeout(LIMIT).cloned(), place);
    let items = [1, 13, 2].map(|n| envelope(NoDecode13(n)));
    let got = pool.map_with(sum_decode, items, chunk()).unwrap().collect();
    assert_map(got, [1, 2], place);
}

#[test]
fn result_serialize_in_the_worker() {
    let pool = pool();
    let place = "result failed to serialize in the worker";
    let f = pool.submit(make_encode, 13).unwrap();
    assert_unlucky(f.result_timeout(LIMIT).cloned(), place);
    let got = pool
        .map_with(make_encode, [1, 13, 2], chunk())
        .unwrap()
        .collect();
    assert_map(got, [1, 2].map(|n| envelope(NoEncode13(n))), place);
}

#[test]
fn result_deserialize_in_the_parent() {
    let pool = pool();
    let place = "result failed to deserialize in the parent";
    let f = pool.submit(make_decode, 13).unwrap();
    assert_unlucky(f.result_timeout(LIMIT).cloned(), place);
    let got = pool
        .map_with(make_decode, [1, 13, 2], chunk())
        .unwrap()
        .collect();
    assert_map(got, [1, 2].map(|n| envelope(NoDecode13(n))), place);
}

/// Leaves `note` out when it is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sparse {
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<u32>,
    count: u32,
}

#[task]
fn count_of(s: Sparse) -> u32 {
    s.count
}

#[task]
fn sparse(n: u32) -> Sparse {
    Sparse {
        note: (n % 2 == 0).then_some(n),
        count: n,
    }
}

/// A field left out by `skip_serializing_if` would make the reader take
/// the next field's bytes for it: refused where it is written, on either
/// side, with the field's name.
#[test]
fn a_field_left_out_is_a_serialization_error_not_a_wrong_value() {
    let pool = pool();
    let written = Sparse {
        note: Some(1),
        count: 5,
    };
    let f = pool.submit(count_of, written).unwrap();
    assert_eq!(f.result_timeout(LIMIT).cloned(), Ok(5));
    let left_out = Sparse {
        note: None,
        count: 5,
    };
    match pool.submit(count_of, left_out) {
        Err(Error::Serialization(e)) => {
            assert!(e.to_string().contains("field `note` was left out"), "{e}")
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    let got: Vec<_> = pool.map_with(sparse, [2, 3], chunk()).unwrap().collect();
    assert_eq!(
        got[0],
        Ok(Sparse {
            note: Some(2),
            count: 2
        })
    );
    match &got[1] {
        Err(e @ Error::Serialization(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("result failed to serialize in the worker"),
                "{text}"
            );
            assert!(text.contains("field `note` was left out"), "{text}");
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
}
