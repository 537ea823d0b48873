//! Shared bits of the benchmark tools.
