//! Privacy rules (being written).
