"""Recording: the recorder, segments, the pre-event buffer, recovery."""
