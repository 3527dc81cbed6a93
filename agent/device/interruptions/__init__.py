"""Interruptions: gaps, and the officer's spoken explanations."""
