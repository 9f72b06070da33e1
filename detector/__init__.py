"""SMS pumping detector."""
