"""Definitions, jobs, schedules and automation of the Mallard code location."""
