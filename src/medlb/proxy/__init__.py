"""The data plane: one listener per mode."""
