"""Running the target: exec mode (pyinit becomes the target) and supervise
mode (pyinit stays PID 1 and runs it as a child)."""
