//! Data pipeline (being written).
