"""Pure computational core of fedray (numpy/torch only, never Ray)."""
