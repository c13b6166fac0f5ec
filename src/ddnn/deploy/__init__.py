"""Deployment: from a trained run to a file on a device (profile, select, export, calibrate)."""
