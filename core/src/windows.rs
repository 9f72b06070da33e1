//! Event-time sliding windows of every entity of a dimension, counted in one flat record per entity (see
//! `detector/windows.py` for the arithmetic and its error bounds).
//!
//! A record holds, per window, its head (the newest bucket any write or read has reached), its two totals
//! (requests, verified), its verified peak (or UNKNOWN when it must be found again), then a ring of
//! `buckets + 1` cells of (requests, verified): the kept buckets [head − buckets, head].

use compact_str::CompactString;
use hashbrown::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

const NEVER: i64 = -(1 << 62); // the head of a window nothing has reached
const UNKNOWN: i64 = -1; // a peak to find again: a bucket holding verified counts left the window
const HEADER: usize = 4;

struct Slot {
    base: usize,
    seconds: f64,
    buckets: f64,
    span: i64,
    cells: usize,
    index: usize, // its place in the lists a count fills: every window of every dimension, in order
    wants_peak: bool,
}

impl Slot {
    /// floor(ts / width) for the non-negative event times the engine admits, computed as Python's
    /// `int(ts / (seconds / buckets))` is, so every store finds the same bucket.
    fn bucket(&self, ts: f64) -> i64 {
        (ts / (self.seconds / self.buckets)) as i64
    }

    fn advance(&self, record: &mut [i64], bucket: i64) {
        let base = self.base;
        let head = record[base];
        record[base] = bucket;
        let cells = self.cells as i64;
        if bucket - head >= cells {
            if record[base + 1] != 0 || record[base + 2] != 0 {
                record[base + 1..base + HEADER + 2 * self.cells].fill(0);
            }
            return;
        }
        for index in head + 1..=bucket {
            let cell = base + HEADER + 2 * index.rem_euclid(cells) as usize;
            let (requests, verified) = (record[cell], record[cell + 1]);
            if requests != 0 || verified != 0 {
                record[base + 1] -= requests;
                record[base + 2] -= verified;
                record[cell] = 0;
                record[cell + 1] = 0;
                if verified != 0 {
                    record[base + 3] = UNKNOWN;
                }
            }
        }
    }

    fn add(&self, record: &mut [i64], ts: f64, requests: i64, verified: i64) {
        let base = self.base;
        let mut bucket = self.bucket(ts);
        let head = record[base];
        if bucket > head {
            self.advance(record, bucket);
        } else if bucket < head - self.span {
            bucket = head - self.span; // a late event counts in the oldest kept bucket, never dropped
        }
        let cell = base + HEADER + 2 * bucket.rem_euclid(self.cells as i64) as usize;
        if requests != 0 {
            record[cell] += requests;
            record[base + 1] += requests;
        }
        if verified != 0 {
            record[cell + 1] += verified;
            record[base + 2] += verified;
            if record[base + 3] >= 0 && record[cell + 1] > record[base + 3] {
                record[base + 3] = record[cell + 1];
            }
        }
    }

    fn read(&self, record: &mut [i64], ts: f64) {
        let bucket = self.bucket(ts);
        if bucket > record[self.base] {
            self.advance(record, bucket);
        }
    }

    fn totals(&self, record: &[i64]) -> (i64, i64) {
        (record[self.base + 1], record[self.base + 2])
    }

    fn peak(&self, record: &mut [i64]) -> i64 {
        let base = self.base;
        if record[base + 3] == UNKNOWN {
            let ring = &record[base + HEADER..base + HEADER + 2 * self.cells];
            record[base + 3] = ring.iter().skip(1).step_by(2).copied().max().unwrap_or(0);
        }
        record[base + 3]
    }
}

/// Ask for the cache line of `value` ahead of its use.
#[inline(always)]
fn prefetch(value: &i64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing; the address is that of a live reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const i64).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

struct Dimension {
    slots: Vec<Slot>,
    template: Box<[i64]>,
    // keys (hashes of 24 characters) held in the table itself, so finding one reads no other memory
    records: HashMap<CompactString, Box<[i64]>>,
    scratch: Box<[i64]>, // the empty record an entity never counted reads as
}

/// What a count or a read found, at each window's place: the (requests, verified) of every window of a
/// keyed entity, and the peaks asked for; None at the places of dimensions that had no key.
pub(crate) struct Found {
    pub(crate) counts: Vec<Option<(i64, i64)>>,
    pub(crate) peaks: Vec<Option<i64>>,
}

impl Found {
    pub(crate) fn new(places: usize) -> Self {
        Found {
            counts: vec![None; places],
            peaks: vec![None; places],
        }
    }

    pub(crate) fn clear(&mut self) {
        self.counts.fill(None);
        self.peaks.fill(None);
    }

    fn report(&mut self, slots: &[Slot], record: &mut [i64]) {
        for slot in slots {
            self.counts[slot.index] = Some(slot.totals(record));
            if slot.wants_peak {
                self.peaks[slot.index] = Some(slot.peak(record));
            }
        }
    }

    /// Put what was found into the caller's lists, at each window's place; other places are left as
    /// they are.
    fn write(
        &self,
        counts: Option<&Bound<'_, PyList>>,
        peaks: Option<&Bound<'_, PyList>>,
    ) -> PyResult<()> {
        for (place, (found, peak)) in self.counts.iter().zip(&self.peaks).enumerate() {
            if let (Some(counts), Some(pair)) = (counts, found) {
                counts.set_item(place, pair)?;
            }
            if let (Some(peaks), Some(peak)) = (peaks, peak) {
                peaks.set_item(place, peak)?;
            }
        }
        Ok(())
    }
}

/// Every window of several dimensions, each counted per entity key.
pub(crate) struct Tables {
    dimensions: Vec<Dimension>,
    names: Names,
    places: usize,
}

/// Dimension names, and how a request's dict of entity keys is read for them.
pub(crate) struct Names {
    // interned, as the dicts of keys hold their names: a name is then found by identity
    names: Vec<Py<PyString>>,
    texts: Vec<String>,
}

impl Names {
    pub(crate) fn new(py: Python<'_>, texts: Vec<String>) -> Self {
        Names {
            names: texts
                .iter()
                .map(|text| PyString::intern(py, text).unbind())
                .collect(),
            texts,
        }
    }

    pub(crate) fn position(&self, text: &str) -> Option<usize> {
        self.texts.iter().position(|known| known == text)
    }

    pub(crate) fn texts(&self) -> impl Iterator<Item = &str> {
        self.texts.iter().map(String::as_str)
    }

    /// The entity key of each name in `keys` (a missing key and None alike mean none), in one pass over
    /// the dict rather than one lookup per name.
    pub(crate) fn keys_in<'py>(
        &self,
        keys: &Bound<'py, PyDict>,
    ) -> PyResult<Vec<Option<Bound<'py, PyString>>>> {
        let mut found = vec![None; self.names.len()];
        for (name, key) in keys.iter() {
            if key.is_none() {
                continue;
            }
            if let Some(place) = self.place_of(&name)? {
                found[place] = Some(key.cast_into::<PyString>()?);
            }
        }
        Ok(found)
    }

    fn place_of(&self, name: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        let place = self
            .names
            .iter()
            .position(|known| known.as_ptr() == name.as_ptr());
        match (place, name.cast::<PyString>()) {
            (Some(place), _) => Ok(Some(place)),
            (None, Ok(name)) => Ok(self.position(name.to_str()?)), // an equal string, not the same object
            (None, Err(_)) => Ok(None),
        }
    }
}

/// The text of a key found by `Names::keys_in`.
pub(crate) fn text<'a>(key: &'a Option<Bound<'_, PyString>>) -> PyResult<Option<&'a str>> {
    key.as_ref().map(|key| key.to_str()).transpose()
}

impl Tables {
    /// `dimensions`: (name, [(seconds, buckets), ...]) per dimension; a window's place in what a count
    /// finds is its position among all of them, in order. `peaks`: the (name, seconds) of the windows
    /// whose busiest verified bucket is reported too.
    pub(crate) fn new(
        py: Python<'_>,
        dimensions: Vec<(String, Vec<(i64, i64)>)>,
        peaks: &[(String, i64)],
    ) -> PyResult<Self> {
        let mut built = Vec::with_capacity(dimensions.len());
        let mut names = Vec::with_capacity(dimensions.len());
        let mut index = 0;
        for (name, windows) in dimensions {
            let mut slots = Vec::with_capacity(windows.len());
            let mut template = Vec::new();
            for (seconds, buckets) in windows {
                if seconds <= 0 || buckets <= 0 {
                    return Err(PyValueError::new_err(format!(
                        "window {name}/{seconds}s: seconds and buckets must be positive, got {seconds} and {buckets}"
                    )));
                }
                let cells = (buckets + 1) as usize;
                slots.push(Slot {
                    base: template.len(),
                    seconds: seconds as f64,
                    buckets: buckets as f64,
                    span: buckets,
                    cells,
                    index,
                    wants_peak: peaks
                        .iter()
                        .any(|(dim, window)| *dim == name && *window == seconds),
                });
                index += 1;
                template.extend([NEVER, 0, 0, 0]);
                template.resize(template.len() + 2 * cells, 0);
            }
            let template = template.into_boxed_slice();
            names.push(name);
            built.push(Dimension {
                slots,
                scratch: template.clone(),
                template,
                records: HashMap::new(),
            });
        }
        Ok(Tables {
            dimensions: built,
            names: Names::new(py, names),
            places: index,
        })
    }

    /// The dimensions' names, in order (what `key_of` is asked for by index).
    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// How many windows there are in all (the places of what a count finds).
    pub(crate) fn places(&self) -> usize {
        self.places
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.dimensions.is_empty()
    }

    /// Count at `ts` in every window of each dimension `key_of` gives a key for (asked by the dimension's
    /// index); put the counts after it (and the peaks asked for) in `found`.
    pub(crate) fn add<'k>(
        &mut self,
        key_of: impl FnMut(usize) -> PyResult<Option<&'k str>>,
        ts: f64,
        (requests, verified): (i64, i64),
        mut found: Option<&mut Found>,
    ) -> PyResult<()> {
        if let Some(found) = found.as_deref_mut() {
            found.clear();
        }
        self.visit(key_of, true, |slots, record| {
            for slot in slots {
                slot.add(record, ts, requests, verified);
            }
            if let Some(found) = found.as_deref_mut() {
                found.report(slots, record);
            }
        })
    }

    /// Move each window of each keyed entity to `ts` (dropping what left it) and put its counts in
    /// `found`; an entity never counted reads as zeros and is not created.
    pub(crate) fn read<'k>(
        &mut self,
        key_of: impl FnMut(usize) -> PyResult<Option<&'k str>>,
        ts: f64,
        found: &mut Found,
    ) -> PyResult<()> {
        found.clear();
        self.visit(key_of, false, |slots, record| {
            for slot in slots {
                slot.read(record, ts);
            }
            found.report(slots, record);
        })
    }

    /// `work` on the record of each dimension's entity that `key_of` names; an entity with no record yet
    /// gets one when `create`, else `work` sees an empty record that is not kept.
    fn visit<'k>(
        &mut self,
        mut key_of: impl FnMut(usize) -> PyResult<Option<&'k str>>,
        create: bool,
        mut work: impl FnMut(&[Slot], &mut [i64]),
    ) -> PyResult<()> {
        // Every record is found (and its windows' heads fetched) before any is worked on: in tables too
        // large for the cache, the lookups of several dimensions then wait for memory together.
        let mut visited = Vec::with_capacity(self.dimensions.len());
        for (index, dimension) in self.dimensions.iter_mut().enumerate() {
            let Some(key) = key_of(index)? else {
                continue;
            };
            let Dimension {
                slots,
                template,
                records,
                scratch,
                ..
            } = dimension;
            // a key of up to 24 bytes becomes a CompactString without allocating
            let record: &mut [i64] = if create {
                records
                    .entry(key.into())
                    .or_insert_with(|| template.clone())
            } else if let Some(record) = records.get_mut(key) {
                record
            } else {
                scratch.copy_from_slice(template);
                scratch
            };
            for line in record.iter().step_by(8) {
                prefetch(line);
            }
            visited.push((&slots[..], record));
        }
        for (slots, record) in visited {
            work(slots, record);
        }
        Ok(())
    }

    /// Forget every entity whose windows are all empty at `ts`; returns how many.
    pub(crate) fn sweep(&mut self, ts: f64) -> usize {
        let mut forgotten = 0;
        for dimension in &mut self.dimensions {
            let before = dimension.records.len();
            let slots = &dimension.slots;
            dimension.records.retain(|_, record| {
                for slot in slots {
                    slot.read(record, ts);
                }
                slots.iter().any(|slot| slot.totals(record) != (0, 0))
            });
            forgotten += before - dimension.records.len();
        }
        forgotten
    }

    /// The requests counted in the first window of the first dimension for `key` at `ts` (0 if none).
    pub(crate) fn requests(&mut self, key: &str, ts: f64) -> i64 {
        let Some(dimension) = self.dimensions.first_mut() else {
            return 0;
        };
        let (Some(slot), Some(record)) = (dimension.slots.first(), dimension.records.get_mut(key))
        else {
            return 0;
        };
        slot.read(record, ts);
        slot.totals(record).0
    }

    pub(crate) fn len(&self) -> usize {
        self.dimensions
            .iter()
            .map(|dimension| dimension.records.len())
            .sum()
    }
}

/// The windows of several dimensions, each counted per entity key (see `detector.windows`).
#[pyclass(module = "detector._core")]
pub(crate) struct WindowTables {
    tables: Tables,
    found: Found,
}

#[pymethods]
impl WindowTables {
    /// `dimensions`: (name, [(seconds, buckets), ...]) per dimension; a window's place in the lists the
    /// methods fill is its position among all of them. `peaks`: the (name, seconds) of the windows whose
    /// busiest verified bucket `add` and `read` report too.
    #[new]
    #[pyo3(signature = (dimensions, peaks = Vec::new()))]
    fn new(
        py: Python<'_>,
        dimensions: Vec<(String, Vec<(i64, i64)>)>,
        peaks: Vec<(String, i64)>,
    ) -> PyResult<Self> {
        let tables = Tables::new(py, dimensions, &peaks)?;
        Ok(WindowTables {
            found: Found::new(tables.places()),
            tables,
        })
    }

    /// Count `requests` and `verified` at `ts` in every window of each dimension that has a key in `keys`
    /// (a bucket that has left a window counts in its oldest kept one); put the counts after it, and the
    /// peaks asked for, in `counts` and `peaks` (lists with a place for every window).
    #[pyo3(signature = (keys, ts, requests, verified, counts = None, peaks = None))]
    fn add(
        &mut self,
        keys: &Bound<'_, PyDict>,
        ts: f64,
        requests: i64,
        verified: i64,
        counts: Option<&Bound<'_, PyList>>,
        peaks: Option<&Bound<'_, PyList>>,
    ) -> PyResult<()> {
        let keys = self.tables.names().keys_in(keys)?;
        let key_of = |index: usize| text(&keys[index]);
        self.tables
            .add(key_of, ts, (requests, verified), Some(&mut self.found))?;
        self.found.write(counts, peaks)
    }

    /// Move each window of each keyed entity to `ts` (dropping what left it), putting its counts in
    /// `counts` and its peaks in `peaks`; an entity never counted reads as zeros and is not created.
    #[pyo3(signature = (keys, ts, counts = None, peaks = None))]
    fn read(
        &mut self,
        keys: &Bound<'_, PyDict>,
        ts: f64,
        counts: Option<&Bound<'_, PyList>>,
        peaks: Option<&Bound<'_, PyList>>,
    ) -> PyResult<()> {
        let keys = self.tables.names().keys_in(keys)?;
        let key_of = |index: usize| text(&keys[index]);
        self.tables.read(key_of, ts, &mut self.found)?;
        self.found.write(counts, peaks)
    }

    /// Forget every entity whose windows are all empty at `ts`, so memory stays bounded; returns how many.
    fn sweep(&mut self, ts: f64) -> usize {
        self.tables.sweep(ts)
    }

    /// How many entities hold a record, in every dimension together.
    fn __len__(&self) -> usize {
        self.tables.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<WindowTables of {} dimensions, {} entities>",
            self.tables.dimensions.len(),
            self.tables.len()
        )
    }
}
