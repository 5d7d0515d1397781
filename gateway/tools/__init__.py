"""Tools beside the gateway: the ladder, the simulator and the remote-Mac agent."""
