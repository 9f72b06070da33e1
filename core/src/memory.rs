//! The in-process store's state (`detector.state.memory.MemoryStore` is its Python face): request records
//! for redelivery, feedback and challenges, every entity's windows, send limits, each number's last request
//! time and each address's distinct members. Quarantines stay in Python: they are few and rarely touched.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::windows::{key_in, Tables, Totals};

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
/// number's previous request time, whether a send slot was taken, the slots used, the distinct members.
type Observed = (u8, Option<Py<PyBytes>>, Option<f64>, bool, i64, i64);

struct Record {
    ts: f64,
    keys: Vec<Option<Py<PyString>>>, // the entity key of each record dimension, in order
    fingerprint: String,
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
struct Due(f64, String);

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

/// The key a request's record kept for the `index`-th dimension of some tables (`places`: where each of
/// their dimensions is among the record's).
fn recorded_key<'py>(
    py: Python<'py>,
    keys: &[Option<Py<PyString>>],
    places: &[Option<usize>],
    index: usize,
) -> Option<Bound<'py, PyString>> {
    places[index]
        .and_then(|place| keys[place].as_ref())
        .map(|key| key.bind(py).clone())
}

/// The place of each of `tables`' dimensions among the record dimensions (None: not recorded).
fn positions(py: Python<'_>, tables: &Tables, record_dims: &[Py<PyString>]) -> Vec<Option<usize>> {
    tables
        .names()
        .map(|name| {
            let name = name.bind(py).to_string();
            record_dims
                .iter()
                .position(|dim| dim.bind(py).to_string() == name)
        })
        .collect()
}

/// The in-process store's state; see the module's documentation.
#[pyclass(module = "detector._core")]
pub(crate) struct MemoryCore {
    counters: Tables,
    passes: Tables,
    limits: Tables,
    limit: i64,
    record_dims: Vec<Py<PyString>>,
    counter_places: Vec<Option<usize>>,
    pass_places: Vec<Option<usize>>,
    limit_dimension: Py<PyString>,
    distinct_dimension: Py<PyString>,
    record_ttl: f64,
    distinct_window: f64,
    records: HashMap<String, Record>,
    expiry: BinaryHeap<Due>, // records do not arrive in expiry order
    last_seen: HashMap<String, f64>,
    distinct: HashMap<String, HashMap<String, f64>>,
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
        let record_dims: Vec<Py<PyString>> = record_dims
            .iter()
            .map(|d| PyString::new(py, d).unbind())
            .collect();
        Ok(MemoryCore {
            counter_places: positions(py, &counters, &record_dims),
            pass_places: positions(py, &passes, &record_dims),
            counters,
            passes,
            limits,
            limit,
            record_dims,
            limit_dimension: PyString::new(py, &limit_dimension).unbind(),
            distinct_dimension: PyString::new(py, &distinct_dimension).unbind(),
            record_ttl,
            distinct_window,
            records: HashMap::new(),
            expiry: BinaryHeap::new(),
            last_seen: HashMap::new(),
            distinct: HashMap::new(),
        })
    }

    /// Record and count a request; fill `windows`, `peaks` and `passes` (challenges passed), lists with a
    /// place for every window (see `Tables::new`).
    /// Returns (NEW, DUPLICATE or REUSED; the stored decision of a duplicate; the number's previous request
    /// time; whether a send slot was taken; the slots used; the address's distinct members).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (request_id, ts, keys, fingerprint, take_slot, distinct_member, windows, peaks, passes))]
    fn observe<'py>(
        &mut self,
        py: Python<'py>,
        request_id: &str,
        ts: f64,
        keys: &Bound<'py, PyDict>,
        fingerprint: &str,
        take_slot: bool,
        distinct_member: Option<&str>,
        windows: &Bound<'py, PyList>,
        peaks: &Bound<'py, PyList>,
        passes: &Bound<'py, PyList>,
    ) -> PyResult<Observed> {
        if self.expiry.peek().is_some_and(|due| due.0 <= ts) {
            self.expire(ts);
        }
        let status = match self.records.get(request_id) {
            None => {
                let mut recorded = Vec::with_capacity(self.record_dims.len());
                for dim in &self.record_dims {
                    recorded.push(key_in(keys, dim)?.map(Bound::unbind));
                }
                self.records.insert(
                    request_id.to_owned(),
                    Record {
                        ts,
                        keys: recorded,
                        fingerprint: fingerprint.to_owned(),
                        resolved: false,
                        decision: None,
                        challenge_expires: None,
                        challenge_done: false,
                    },
                );
                self.expiry
                    .push(Due(ts + self.record_ttl, request_id.to_owned()));
                NEW
            }
            Some(known) if known.same_request(fingerprint) => {
                let stored = known.decision.as_ref().map(|d| d.clone_ref(py));
                return Ok((DUPLICATE, stored, None, true, 0, 0));
            }
            Some(_) => REUSED,
        };

        let mut key_of = |_: usize, name: &Py<PyString>| key_in(keys, name);
        self.counters.add(
            &mut key_of,
            ts,
            1,
            0,
            Some(windows),
            Some(peaks),
            Totals::Pairs,
        )?;
        if !self.passes.is_empty() {
            self.passes
                .read(&mut key_of, ts, Some(passes), None, Totals::Requests)?;
        }

        let (mut previous, mut slot_taken, mut slot_count) = (None, true, 0);
        if let Some(number) = key_in(keys, &self.limit_dimension)? {
            let number = number.to_str()?;
            previous = self.last_seen.get(number).copied();
            let latest = previous.map_or(ts, |seen| seen.max(ts));
            self.last_seen.insert(number.to_owned(), latest);
            if take_slot && status != REUSED {
                let taken = self.limits.requests(number, ts);
                slot_taken = taken < self.limit;
                if slot_taken {
                    self.limits
                        .add(&mut key_of, ts, 1, 0, None, None, Totals::Requests)?;
                }
                slot_count = taken + i64::from(slot_taken);
            }
        }

        let mut distinct = 0;
        if let (Some(address), Some(member)) =
            (key_in(keys, &self.distinct_dimension)?, distinct_member)
        {
            let members = self
                .distinct
                .entry(address.to_str()?.to_owned())
                .or_default();
            let seen = members.entry(member.to_owned()).or_insert(ts);
            *seen = seen.max(ts);
            let horizon = ts - self.distinct_window;
            if members.values().any(|&seen| seen <= horizon) {
                members.retain(|_, seen| *seen > horizon);
            }
            distinct = members.len() as i64;
        }
        Ok((status, None, previous, slot_taken, slot_count, distinct))
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
        let mut key_of = |index: usize, _: &Py<PyString>| Ok(recorded_key(py, keys, places, index));
        self.counters
            .add(&mut key_of, record.ts, 0, 1, None, None, Totals::Pairs)?;
        Ok(APPLIED)
    }

    /// A challenge's result: UNKNOWN (no open challenge), MISMATCH (another request's fingerprint), ALREADY
    /// (taken before), EXPIRED, or APPLIED; a pass counts in its entities' pass windows (into `passes`).
    fn challenge(
        &mut self,
        py: Python<'_>,
        request_id: &str,
        ts: f64,
        fingerprint: &str,
        passed: bool,
        passes: &Bound<'_, PyList>,
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
            let mut key_of =
                |index: usize, _: &Py<PyString>| Ok(recorded_key(py, keys, places, index));
            self.passes
                .add(&mut key_of, ts, 1, 0, Some(passes), None, Totals::Requests)?;
        }
        Ok(APPLIED)
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
