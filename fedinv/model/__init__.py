"""fedinv.model."""
