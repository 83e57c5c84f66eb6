"""The server process: workers, signals and memory settings."""
