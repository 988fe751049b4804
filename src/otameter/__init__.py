"""otameter: usage metering and statistics for Capacitor live updates."""

__version__ = "0.1.0"
