"""ElectionGuard 1.x arithmetic: pure functions on data, no I/O, importable on a bare Ray worker."""
