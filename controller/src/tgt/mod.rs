//! tgtd's management interface (to be written).
