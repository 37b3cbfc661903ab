"""Re-implementations of `monolith.native_training` modules on stock TF."""
