//! Running sipp and capturing loopback traffic for the live tests.
