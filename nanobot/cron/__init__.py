"""Scheduled jobs: their schedules, where they are stored, and the scheduler that fires them."""
