//! placeholder (being written).
