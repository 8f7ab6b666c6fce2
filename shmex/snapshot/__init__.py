"""snapshot — see DESIGN.md."""
