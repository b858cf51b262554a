"""The horizontal round engine: plain classes, no Ray (engine, fleet, devices, records, streams)."""
