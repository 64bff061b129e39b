"""Use cases. Each service gets its collaborators through its constructor."""
