//! The crate's only `unsafe` code: instructions that `pulp` does not wrap, behind a token
//! that exists only where the CPU was found to run them.
//!
//! - [`vnni`]: AVX-512 VNNI's `vpdpbusd`, four u8 × i8 products summed per lane.
//! - [`prefetch`]: the cache hint `prefetcht0` on the lines of a slice.
//!
//! Every `vnni` call's one condition is checked when its token is made; those calls take and
//! return registers only, never memory. A prefetch reads and writes nothing.
#![allow(unsafe_code)]

pub(crate) mod prefetch;
pub(crate) mod vnni;
