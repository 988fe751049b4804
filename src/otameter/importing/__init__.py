"""``otameter import``: reading and checking a file's lines, folding its slices in parsing
processes, storing the folded slices through the writer."""
