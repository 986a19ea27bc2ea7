//! terra, the builder.
