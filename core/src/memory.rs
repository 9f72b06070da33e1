//! The in-process store's state (`detector.state.memory.MemoryStore` is its Python face): request records
//! for redelivery, feedback and challenges, every entity's windows, send limits, each number's last request
//! time and each address's distinct members. Quarantines stay in Python: they are few and rarely touched.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use compact_str::CompactString;
use hashbrown::hash_map::Entry;
use hashbrown::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::windows::{text, Found, Names, Tables};

/// What `observe` found: a new request, a redelivery of a recorded one, or a known id with another
/// fingerprint (counted, but with no record and no send slot).
const NEW: u8 = 0;
const DUPLICATE: u8 = 1;
const REUSED: u8 = 2;

/// Feedback answers, as `detector.state.base.FeedbackStatus` in this order.
const UNKNOWN: u8 = 0;
const FAILED: u8 = 1;
const ALREADY: u8 = 2;
const APPLIED: u8 = 3;
/// Challenge answers beyond those: the challenge had expired, or another request's fingerprint.
const EXPIRED: u8 = 4;
const MISMATCH: u8 = 5;

/// `observe`'s answer: what it found (NEW, DUPLICATE, REUSED), the stored decision of a duplicate, the
/// number's previous request time, whether a send slot was taken, the slots used, the distinct members,
/// then the counts, peaks and passes of every window at its place (empty lists for a duplicate).
type Observed<'py> = (
    u8,
    Option<Py<PyBytes>>,
    Option<f64>,
    bool,
    i64,
    i64,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
);

struct Record {
    ts: f64,
    keys: Box<[Option<Py<PyString>>]>, // the entity key of each record dimension, in order
    fingerprint: CompactString,
    resolved: bool,
    decision: Option<Py<PyBytes>>,
    challenge_expires: Option<f64>, // an open challenge (event time), until its result or expiry
    challenge_done: bool,
}

impl Record {
    /// Records written without a fingerprint match any request of their id.
    fn same_request(&self, seen: &str) -> bool {
        self.fingerprint.is_empty() || self.fingerprint == seen
    }
}

/// A record's expiry in the heap: the earliest first.
struct Due(f64, CompactString);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// The key of a request (or its record) for the `index`-th dimension of some tables (`places`: where each
/// of their dimensions is among the record dimensions, whose keys are `keys`).
fn placed<'a, K>(keys: &'a [Option<K>], places: &[Option<usize>], index: usize) -> Option<&'a K> {
    places[index].and_then(|place| keys[place].as_ref())
}

/// The place of each of `tables`' dimensions among `dims`.
fn positions(tables: &Tables, dims: &Names) -> Vec<Option<usize>> {
    tables
        .names()
        .texts()
        .map(|name| dims.position(name))
        .collect()
}

/// The (requests, verified) tuples of counts below SMALL, made once and shared: most windows of most
/// entities hold a few requests, and a shared tuple costs a reference where a new one costs an object.
struct SmallPairs(Vec<Py<PyTuple>>);

const SMALL: i64 = 16;

impl SmallPairs {
    fn new(py: Python<'_>) -> PyResult<Self> {
        let pairs = (0..SMALL * SMALL)
            .map(|index| Ok(PyTuple::new(py, [index / SMALL, index % SMALL])?.unbind()));
        Ok(SmallPairs(pairs.collect::<PyResult<_>>()?))
    }

    /// A list of counts, one per window place: a tuple, or None where the request had no entity.
    fn listed<'py>(
        &self,
        py: Python<'py>,
        counts: &[Option<(i64, i64)>],
    ) -> PyResult<Bound<'py, PyList>> {
        let items = counts
            .iter()
            .map(|found| found.map(|pair| self.pair(py, pair)).transpose());
        PyList::new(py, items.collect::<PyResult<Vec<_>>>()?)
    }

    fn pair<'py>(
        &self,
        py: Python<'py>,
        (requests, verified): (i64, i64),
    ) -> PyResult<Bound<'py, PyAny>> {
        if (0..SMALL).contains(&requests) && (0..SMALL).contains(&verified) {
            Ok(self.0[(requests * SMALL + verified) as usize]
                .bind(py)
                .clone()
                .into_any())
        } else {
            Ok(PyTuple::new(py, [requests, verified])?.into_any())
        }
    }
}

/// The in-process store's state; see the module's documentation.
#[pyclass(module = "detector._core")]
pub(crate) struct MemoryCore {
    counters: Tables,
    passes: Tables,
    limits: Tables,
    limit: i64,
    dims: Names, // the record dimensions, then the limit's and the distinct members' if not among them
    recorded: usize, // how many of `dims` a record keeps
    counter_places: Vec<Option<usize>>,
    pass_places: Vec<Option<usize>>,
    limit_place: usize,
    distinct_place: usize,
    counted: Found, // what the last count found in the counted windows, and in the windows of passes
    passed: Found,
    pairs: SmallPairs,
    record_ttl: f64,
    distinct_window: f64,
    // request ids and entity keys (short) held in the tables themselves
    records: HashMap<CompactString, Record>,
    expiry: BinaryHeap<Due>, // records do not arrive in expiry order
    last_seen: HashMap<CompactString, f64>,
    distinct: HashMap<CompactString, HashMap<CompactString, f64>>,
}

#[pymethods]
impl MemoryCore {
    /// `windows`, `pass_windows`: (dimension, [(seconds, buckets), ...]) of the counted windows and of the
    /// windows of challenges passed; `peaks`: the labels whose busiest verified bucket is reported;
    /// `limit_window` and `limit`: each number's send limit; `record_dims`: the dimensions a request's
    /// record keeps the keys of (feedback and challenges count on them).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        windows: Vec<(String, Vec<(i64, i64)>)>,
        peaks: Vec<(String, i64)>,
        pass_windows: Vec<(String, Vec<(i64, i64)>)>,
        limit_dimension: String,
        limit_window: (i64, i64),
        limit: i64,
        distinct_dimension: String,
        distinct_window: f64,
        record_dims: Vec<String>,
        record_ttl: f64,
    ) -> PyResult<Self> {
        let counters = Tables::new(py, windows, &peaks)?;
        let passes = Tables::new(py, pass_windows, &[])?;
        let limits = Tables::new(py, vec![(limit_dimension.clone(), vec![limit_window])], &[])?;
        let recorded = record_dims.len();
        let mut dims = record_dims;
        let mut place_of = |dim: String| match dims.iter().position(|known| *known == dim) {
            Some(place) => place,
            None => {
                dims.push(dim);
                dims.len() - 1
            }
        };
        let (limit_place, distinct_place) =
            (place_of(limit_dimension), place_of(distinct_dimension));
        let dims = Names::new(py, dims);
        Ok(MemoryCore {
            counter_places: positions(&counters, &dims),
            pass_places: positions(&passes, &dims),
            limit_place,
            distinct_place,
            counted: Found::new(counters.places()),
            pairs: SmallPairs::new(py)?,
            passed: Found::new(passes.places()),
            counters,
            passes,
            limits,
            limit,
            dims,
            recorded,
            record_ttl,
            distinct_window,
            records: HashMap::new(),
            expiry: BinaryHeap::new(),
            last_seen: HashMap::new(),
            distinct: HashMap::new(),
        })
    }

    /// Record and count a request. Returns (NEW, DUPLICATE or REUSED; the stored decision of a duplicate;
    /// the number's previous request time; whether a send slot was taken; the slots used; the address's
    /// distinct members; the counts, peaks and challenges passed of every window at its place, see
    /// `Tables::new`).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (request_id, ts, keys, fingerprint, take_slot, distinct_member))]
    fn observe<'py>(
        &mut self,
        py: Python<'py>,
        request_id: &str,
        ts: f64,
        keys: &Bound<'py, PyDict>,
        fingerprint: &str,
        take_slot: bool,
        distinct_member: Option<&str>,
    ) -> PyResult<Observed<'py>> {
        if self.expiry.peek().is_some_and(|due| due.0 <= ts) {
            self.expire(ts);
        }
        let status = match self.records.get(request_id) {
            None => NEW,
            Some(known) if known.same_request(fingerprint) => {
                let stored = known.decision.as_ref().map(|d| d.clone_ref(py));
                let none = || PyList::empty(py);
                return Ok((DUPLICATE, stored, None, true, 0, 0, none(), none(), none()));
            }
            Some(_) => REUSED,
        };
        // the keys read once, for the record and every table
        let resolved = self.dims.keys_in(keys)?;
        if status == NEW {
            let recorded = resolved[..self.recorded]
                .iter()
                .map(|key| key.as_ref().map(|key| key.clone().unbind()))
                .collect();
            let request_id = CompactString::from(request_id);
            self.records.insert(
                request_id.clone(),
                Record {
                    ts,
                    keys: recorded,
                    fingerprint: fingerprint.into(),
                    resolved: false,
                    decision: None,
                    challenge_expires: None,
                    challenge_done: false,
                },
            );
            self.expiry.push(Due(ts + self.record_ttl, request_id));
        }

        let places = &self.counter_places;
        let key_of = |index| {
            placed(&resolved, places, index)
                .map(|key| key.to_str())
                .transpose()
        };
        self.counters
            .add(key_of, ts, (1, 0), Some(&mut self.counted))?;
        if !self.passes.is_empty() {
            let places = &self.pass_places;
            let key_of = |index| {
                placed(&resolved, places, index)
                    .map(|key| key.to_str())
                    .transpose()
            };
            self.passes.read(key_of, ts, &mut self.passed)?;
        }

        let (mut previous, mut slot_taken, mut slot_count) = (None, true, 0);
        if let Some(number) = text(&resolved[self.limit_place])? {
            match self.last_seen.entry(number.into()) {
                Entry::Occupied(mut seen) => {
                    previous = Some(*seen.get());
                    let latest = seen.get_mut();
                    *latest = latest.max(ts);
                }
                Entry::Vacant(unseen) => {
                    unseen.insert(ts);
                }
            }
            if take_slot && status != REUSED {
                let taken = self.limits.requests(number, ts);
                slot_taken = taken < self.limit;
                if slot_taken {
                    self.limits.add(|_| Ok(Some(number)), ts, (1, 0), None)?;
                }
                slot_count = taken + i64::from(slot_taken);
            }
        }

        let mut distinct = 0;
        if let (Some(address), Some(member)) =
            (text(&resolved[self.distinct_place])?, distinct_member)
        {
            let members = self.distinct.entry(address.into()).or_default();
            let seen = members.entry(member.into()).or_insert(ts);
            *seen = seen.max(ts);
            let horizon = ts - self.distinct_window;
            if members.values().any(|&seen| seen <= horizon) {
                members.retain(|_, seen| *seen > horizon);
            }
            distinct = members.len() as i64;
        }
        let Found { counts, peaks } = &self.counted;
        Ok((
            status,
            None,
            previous,
            slot_taken,
            slot_count,
            distinct,
            self.pairs.listed(py, counts)?,
            PyList::new(py, peaks.iter().map(|peak| peak.unwrap_or(0)))?,
            self.passes_found(py)?,
        ))
    }

    /// A request's feedback: UNKNOWN (no record), FAILED (not verified), ALREADY (resolved before) or
    /// APPLIED (its entities count a verification, in the request's own buckets).
    fn feedback(&mut self, py: Python<'_>, request_id: &str, resolved: bool) -> PyResult<u8> {
        let Some(record) = self.records.get_mut(request_id) else {
            return Ok(UNKNOWN);
        };
        if !resolved {
            return Ok(FAILED);
        }
        if record.resolved {
            return Ok(ALREADY);
        }
        record.resolved = true;
        let (keys, places) = (&record.keys, &self.counter_places);
        let key_of = |index| {
            placed(keys, places, index)
                .map(|key| key.to_str(py))
                .transpose()
        };
        self.counters.add(key_of, record.ts, (0, 1), None)?;
        Ok(APPLIED)
    }

    /// A challenge's result: UNKNOWN (no open challenge), MISMATCH (another request's fingerprint), ALREADY
    /// (taken before), EXPIRED, or APPLIED; with the challenges passed in each window of passes at its
    /// place (those of the request's entities after an applied pass, else zeros).
    fn challenge<'py>(
        &mut self,
        py: Python<'py>,
        request_id: &str,
        ts: f64,
        fingerprint: &str,
        passed: bool,
    ) -> PyResult<(u8, Bound<'py, PyList>)> {
        self.passed.clear();
        let status = self.settle(py, request_id, ts, fingerprint, passed)?;
        Ok((status, self.passes_found(py)?))
    }

    /// Keep a request's (packed) decision for its redeliveries, and open its challenge until
    /// `challenge_expires`; the first decision of a request is the one kept.
    fn remember(
        &mut self,
        request_id: &str,
        decision: Py<PyBytes>,
        challenge_expires: Option<f64>,
    ) {
        if let Some(record) = self.records.get_mut(request_id) {
            if record.decision.is_none() {
                record.decision = Some(decision);
                record.challenge_expires = challenge_expires;
            }
        }
    }

    /// Forget what has left every window at `now`, so memory stays bounded.
    fn sweep(&mut self, now: f64) {
        self.counters.sweep(now);
        self.passes.sweep(now);
        self.limits.sweep(now);
        let horizon = now - self.record_ttl;
        self.last_seen.retain(|_, seen| *seen > horizon);
        let horizon = now - self.distinct_window;
        self.distinct
            .retain(|_, members| members.values().any(|&seen| seen > horizon));
    }

    fn has_record(&self, request_id: &str) -> bool {
        self.records.contains_key(request_id)
    }

    /// How many request records and counted entities it holds.
    fn sizes(&self) -> (usize, usize) {
        (
            self.records.len(),
            self.counters.len() + self.passes.len() + self.limits.len(),
        )
    }
}

impl MemoryCore {
    /// `challenge`'s answer; a pass counts in its entities' pass windows (into `self.passed`).
    fn settle(
        &mut self,
        py: Python<'_>,
        request_id: &str,
        ts: f64,
        fingerprint: &str,
        passed: bool,
    ) -> PyResult<u8> {
        let Some(record) = self.records.get_mut(request_id) else {
            return Ok(UNKNOWN);
        };
        let Some(expires) = record.challenge_expires else {
            return Ok(UNKNOWN);
        };
        if !fingerprint.is_empty() && !record.same_request(fingerprint) {
            return Ok(MISMATCH);
        }
        if record.challenge_done {
            return Ok(ALREADY);
        }
        record.challenge_done = true;
        if ts > expires {
            return Ok(EXPIRED);
        }
        if passed {
            let (keys, places) = (&record.keys, &self.pass_places);
            let key_of = |index| {
                placed(keys, places, index)
                    .map(|key| key.to_str(py))
                    .transpose()
            };
            self.passes
                .add(key_of, ts, (1, 0), Some(&mut self.passed))?;
        }
        Ok(APPLIED)
    }

    /// The challenges passed that the last count or read found, per window of passes (0 where none).
    fn passes_found<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let passes = self.passed.counts.iter();
        PyList::new(
            py,
            passes.map(|found| found.map_or(0, |(passes, _)| passes)),
        )
    }

    fn expire(&mut self, now: f64) {
        while self.expiry.peek().is_some_and(|due| due.0 <= now) {
            let Some(Due(_, request_id)) = self.expiry.pop() else {
                break;
            };
            // not a newer record of the same id
            if self
                .records
                .get(&request_id)
                .is_some_and(|record| record.ts + self.record_ttl <= now)
            {
                self.records.remove(&request_id);
            }
        }
    }
}
