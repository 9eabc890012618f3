"""fedinv.deploy."""
