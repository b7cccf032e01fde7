//! Packed low-bit weight formats: quantizers, packers and unpackers. (Being written.)
