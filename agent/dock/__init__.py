"""The docking station: pull, bulk transfer, direct file, enroll, its CLI."""
