//! The crate's only `unsafe` code: instructions that `pulp` does not wrap, behind a token
//! that exists only where the CPU was found to run them.
//!
//! - [`vnni`]: AVX-512 VNNI's `vpdpbusd`, four u8 × i8 products summed per lane.
//!
//! Every call's one condition is checked when its token is made; the calls take and return
//! registers only, never memory.
#![allow(unsafe_code)]

pub(crate) mod vnni;
