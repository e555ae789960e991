"""Broadcasts: an admin's message to a segment of leads (segments.py says who, broadcasts.py
drafts, launches, delivers through the touch outbox and reports)."""
