"""End-to-end tests against a real llama.cpp server, and the simulator calibration."""
