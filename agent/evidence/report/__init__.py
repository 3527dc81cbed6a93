"""`bodycam report`: a store's shifts and incidents, verified, then drawn (docs/report.md)."""
