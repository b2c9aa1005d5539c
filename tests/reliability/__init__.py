"""The reliability and security matrix (issue 16): faults at every step, bad input, concurrency, secrets."""
