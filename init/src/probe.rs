//! Superblock probing (placeholder).
