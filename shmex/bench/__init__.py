"""bench — see DESIGN.md."""
