"""What every capability shares: the tables, the reads and writes of leads, the clock, the
stage rules, what people type, and Telegram's text limits."""
