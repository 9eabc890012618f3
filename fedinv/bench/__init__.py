"""fedinv.bench."""
