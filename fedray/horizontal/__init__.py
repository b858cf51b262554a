"""Horizontal federated training: device hosts, the driver actor and the round loop."""
