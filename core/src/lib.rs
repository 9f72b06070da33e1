//! The detector's compiled core (`detector._core`): the in-process store's state, counted in Rust.
//!
//! `windows`: event-time sliding windows of every entity of a dimension. `memory`: the in-process store's
//! request records, send limits, last-request times and distinct members around those windows.

mod memory;
mod windows;

use pyo3::prelude::*;

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<windows::WindowTables>()?;
    module.add_class::<memory::MemoryCore>()?;
    Ok(())
}
