//! Live: sipp on loopback, captured, replayed. (Being written.)
