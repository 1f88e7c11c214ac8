"""The device fleet simulator: physics, anomalies, ground truth and the HTTP sender."""
