"""Monitoring: prediction log, drift and performance reports, alerts."""
