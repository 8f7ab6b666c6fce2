"""shm — see DESIGN.md."""
