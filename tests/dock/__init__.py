"""The docking station's own parts."""
