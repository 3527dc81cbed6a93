"""Hardware behind narrow interfaces: one module per kind of part, real and simulated backends."""
