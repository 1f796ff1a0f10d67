"""The faults of the fault phase: the nemesis, lost disks and membership changes."""
