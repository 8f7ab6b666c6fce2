"""wal — see DESIGN.md."""
