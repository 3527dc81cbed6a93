"""The camera: protocols and stand-in (base), the chooser (factory), backends."""
