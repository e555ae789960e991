"""Follow-ups (nurture, win-back, post-sale): who is due for which touch, the decision
before sending, what a touch says, the touch queue, and the sending rules."""
