"""Durable timers and cron ticks on APScheduler."""
