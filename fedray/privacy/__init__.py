"""Private horizontal rounds: secure aggregation (keys, PRG masks, Shamir shares, unmasking) and DP. No Ray here."""
