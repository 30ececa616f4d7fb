"""The session and its engines: parity with the reference loop, call traces, history, hostile input."""
