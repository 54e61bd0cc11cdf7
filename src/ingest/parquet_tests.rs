//! Unit tests of Parquet input (files written with the parquet crate's own writer).
