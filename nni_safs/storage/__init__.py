"""Where a run keeps things: the workspace's files by name, checksummed checkpoints, the state
journal, whole-or-nothing writes."""
