"""procs — see DESIGN.md."""
