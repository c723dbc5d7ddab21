//! Small layers built from loaded weights (no random initialisation on this path).
