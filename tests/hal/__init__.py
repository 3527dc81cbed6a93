"""The hardware layer, each backend against its library's contract."""
