"""Offload to the remote pool: the state machine, host signals and the loop that feeds it."""
