//! SASRec model (being written).
