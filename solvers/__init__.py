"""solvers: see DESIGN.md section 1 (filled by later issues)."""
