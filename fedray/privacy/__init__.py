"""Private horizontal rounds: secure aggregation (keys, PRG masks, Shamir shares, unmasking) and DP (clipping, noise,
accounting). No Ray here."""
