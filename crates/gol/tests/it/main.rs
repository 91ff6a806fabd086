//! weir-gol's tests: both engines against a byte-per-cell reference.

mod dense;
mod patterns;
mod reference;
mod soup;
mod sparse;
