"""fedinv.sim."""
