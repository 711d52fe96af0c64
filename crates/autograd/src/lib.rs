//! Autograd tape (being written).
