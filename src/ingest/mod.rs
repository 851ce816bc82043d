//! Ingest decoders (being written).
