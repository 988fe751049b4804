"""Metering: events become stored facts (the writer, the check-in log, the fold, the pipeline)
and facts become per-day figures (the rollup)."""
