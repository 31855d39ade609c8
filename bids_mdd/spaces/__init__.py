"""Template space and the model grids, shared by every package."""
