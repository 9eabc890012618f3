"""fedinv.policies."""
