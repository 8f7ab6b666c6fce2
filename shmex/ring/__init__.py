"""ring — see DESIGN.md."""
