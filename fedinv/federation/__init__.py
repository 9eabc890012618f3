"""fedinv.federation."""
